import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { errors } from '../errors.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler of admin routes: requires `Authorization: Bearer <ADMIN_TOKEN>`. */
    verifyAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** Whether a bearer token is ADMIN_TOKEN (never true when it is empty). */
    isAdminToken: (presented: string) => boolean;
  }
}

const digest = (value: string) => createHash('sha256').update(value).digest();

export default fp(
  async (app) => {
    const token = app.config.ADMIN_TOKEN;
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
    app.decorate('verifyAdmin', async (request: FastifyRequest) => {
      const header = request.headers.authorization ?? '';
      if (!isAdminToken(header.startsWith('Bearer ') ? header.slice(7) : '')) throw errors.unauthorized();
    });
  },
  { name: 'admin-auth', dependencies: ['stores'] },
);
