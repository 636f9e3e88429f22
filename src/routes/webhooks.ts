import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { checkSignature } from '../domain/signatures.js';
import { errors } from '../errors.js';
import { ErrorSchema } from '../schemas/error.js';
import { PaymentOutcomeSchema, PaymentWebhookSchema, type PaymentOutcome } from '../schemas/order.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The body exactly as received: signatures are computed over these bytes, not over re-serialised JSON. */
    rawBody?: string;
  }
}

const routes: FastifyPluginAsyncTypebox = async (app) => {
  const secrets = app.settings.webhookSecrets;
  if (secrets.length === 0) {
    app.log.warn('WEBHOOK_SECRET is not set: payment webhooks are accepted unsigned');
  }

  // In this plugin only: keep the raw body beside the parsed one, and leave a parse failure for after the
  // signature check, so an unsigned request is told 401 whatever its body.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request: FastifyRequest, body, done) => {
    request.rawBody = body as string;
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(null, undefined);
    }
  });

  app.post(
    '/webhooks/payment',
    {
      schema: {
        summary: 'Payment provider webhook: settles an order (signed with X-Signature when WEBHOOK_SECRET is set)',
        body: PaymentWebhookSchema,
        response: {
          200: PaymentOutcomeSchema,
          400: ErrorSchema,
          401: ErrorSchema,
          404: ErrorSchema,
          409: ErrorSchema,
          422: ErrorSchema,
          503: ErrorSchema,
        },
      },
      // Before validation: an unsigned or forged request learns nothing about what a valid body looks like.
      preValidation: async (request) => {
        const raw = request.rawBody ?? '';
        if (secrets.length > 0) {
          const header = request.headers['x-signature'];
          const check = checkSignature(typeof header === 'string' ? header : undefined, raw, secrets);
          if (!check.valid) {
            request.log.warn({ req_id: request.id, reason: check.reason }, 'webhook signature rejected');
            throw errors.invalidSignature(check.reason);
          }
        }
        if (request.body === undefined) throw errors.invalidJson('the body is not valid JSON');
        // Postgres stores no NUL character in text or jsonb: refuse it here rather than fail there.
        if (containsNul(request.body)) throw errors.validation('the body must not contain NUL characters');
      },
    },
    async (request, reply) => {
      const answer = await app.payments.handle({
        webhook: request.body,
        signature: secrets.length > 0 ? 'valid' : 'unsigned',
      });
      if (answer.replayed) reply.header('idempotent-replayed', 'true');
      // The stored status is one of those the schema lists (200, 404, 409, 422).
      return reply.code(answer.statusCode as 200).send(answer.body as PaymentOutcome);
    },
  );
};

/** Whether any string (key or value) in a parsed JSON document holds a NUL character. */
function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(containsNul);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([key, v]) => key.includes('\0') || containsNul(v));
  }
  return false;
}

export default routes;
