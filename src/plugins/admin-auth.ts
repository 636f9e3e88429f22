import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { errors } from '../errors.js';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * onRequest hook of admin routes (before the body is read or checked): requires `Authorization: Bearer <ADMIN_TOKEN>`. An address that presented
     * ADMIN_AUTH_MAX_FAILURES wrong tokens in a window is answered 429 until the window ends, whatever it sends.
     */
    verifyAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** Whether a bearer token is ADMIN_TOKEN (never true when it is empty). */
    isAdminToken: (presented: string) => boolean;
  }
}

const digest = (value: string) => createHash('sha256').update(value).digest();

export default fp(
  async (app) => {
    const { ADMIN_TOKEN: token, ADMIN_AUTH_MAX_FAILURES: maxFailures, ADMIN_AUTH_WINDOW_SECONDS } = app.config;
    const windowMs = ADMIN_AUTH_WINDOW_SECONDS * 1000;
    const commands = app.redisCommands;
    if (!token) {
      app.log.warn(
        'admin routes answer 401: set ADMIN_TOKEN to enable them (npm run seed adds demo products without it)',
      );
    }
    // Comparing fixed-length digests keeps the comparison constant-time whatever the lengths.
    const expected = token ? digest(token) : null;
    const isAdminToken = (presented: string) =>
      expected !== null && presented !== '' && timingSafeEqual(digest(presented), expected);
    app.decorate('isAdminToken', isAdminToken);
    app.decorate('verifyAdmin', async (request: FastifyRequest, reply: FastifyReply) => {
      if (!expected) throw errors.unauthorized(); // admin routes are off: nothing to guess
      // The count lives in Redis, so a guesser spread over several instances meets one limit.
      const seen = await commands.adminFailures(request.ip, windowMs, false);
      if (seen.failures >= maxFailures) throw throttled(reply, seen.msLeft);
      const header = request.headers.authorization ?? '';
      if (isAdminToken(header.startsWith('Bearer ') ? header.slice(7) : '')) return;
      const counted = await commands.adminFailures(request.ip, windowMs, true);
      request.log.warn({ client: request.ip, failures: counted.failures }, 'wrong admin token');
      throw errors.unauthorized();
    });
  },
  { name: 'admin-auth', dependencies: ['stores'] },
);

function throttled(reply: FastifyReply, msLeft: number) {
  const seconds = Math.max(1, Math.ceil(msLeft / 1000));
  reply.header('retry-after', String(seconds));
  return errors.adminThrottled(seconds);
}
