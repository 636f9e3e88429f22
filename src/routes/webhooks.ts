import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { checkSignature } from '../domain/signatures.js';
import { errors } from '../errors.js';
import { replayable, SIGNED_DELIVERY } from '../schemas/docs.js';
import { ANY_ROUTE, BODY, errorResponses } from '../schemas/error.js';
import { jsonBodyParser } from '../schemas/json-input.js';
import { PaymentOutcomeSchema, PaymentWebhookSchema, type PaymentOutcome } from '../schemas/order.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The body exactly as received: signatures are computed over these bytes, not over re-serialised JSON. */
    rawBody?: string;
    /** Why the body could not be read (bad JSON, bad text, too deep), told only once the signature is checked. */
    bodyRefusal?: Error;
  }
}

// The statuses of a delivery's answer as stored and replayed (src/domain/payments.ts).
const STORED_ANSWERS = new Set([404, 409, 422]);

const routes: FastifyPluginAsyncTypebox = async (app) => {
  const { webhookSecrets: secrets, webhookAllowUnsigned } = app.settings;
  // Closed by default: with no secret, nothing can be verified, so nothing is accepted unless asked for.
  const acceptsUnsigned = secrets.length === 0 && webhookAllowUnsigned;
  if (acceptsUnsigned) {
    app.log.warn(
      'WEBHOOK_ALLOW_UNSIGNED=true and no WEBHOOK_SECRET: ANYONE who can reach this service can mark orders paid. Local use only.',
    );
  } else if (secrets.length === 0) {
    app.log.warn('WEBHOOK_SECRET is not set: every payment webhook is refused with 401 INVALID_SIGNATURE');
  }

  // In this plugin only: keep the raw body beside the parsed one, and leave a refused body for after the
  // signature check, so an unsigned request is told 401 whatever its body.
  const readJson = jsonBodyParser(app);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request: FastifyRequest, body, done) => {
    request.rawBody = body as string;
    readJson(request, body as string, (err, value) => {
      if (err) request.bodyRefusal = err;
      done(null, err ? undefined : value);
    });
  });

  app.post(
    '/webhooks/payment',
    {
      schema: {
        summary: 'Payment provider webhook: settles an order (signed with X-Signature; see WEBHOOK_SECRET)',
        description:
          'Each delivery is recorded with its answer under its idempotency_key; a repeat is answered the stored answer (Idempotent-Replayed: true), the same key with another body is 422. A success whose amount_cents or currency differ from the order is recorded but changes nothing (applied: false, reason PAYMENT_MISMATCH). The signature is checked before the body, so an unsigned delivery is told 401 whatever it sends.',
        tags: ['webhooks'],
        security: SIGNED_DELIVERY,
        body: PaymentWebhookSchema,
        response: {
          200: replayable(PaymentOutcomeSchema),
          ...Object.fromEntries(
            Object.entries(
              errorResponses(
                ...ANY_ROUTE,
                ...BODY,
                'INVALID_SIGNATURE',
                'ORDER_NOT_FOUND',
                'ORDER_ALREADY_FINAL',
                'IDEMPOTENCY_KEY_REUSED',
              ),
            ).map(([status, schema]) => [status, STORED_ANSWERS.has(Number(status)) ? replayable(schema) : schema]),
          ),
        },
      },
      // Before validation: an unsigned or forged request learns nothing about what a valid body looks like.
      preValidation: async (request) => {
        if (!acceptsUnsigned) {
          const header = request.headers['x-signature'];
          const check =
            secrets.length === 0
              ? { valid: false as const, reason: 'no WEBHOOK_SECRET is configured, so no delivery can be verified' }
              : checkSignature(typeof header === 'string' ? header : undefined, request.rawBody ?? '', secrets);
          if (!check.valid) {
            app.metricEvents.webhook('bad_signature');
            request.log.warn({ reason: check.reason }, 'webhook signature rejected');
            throw errors.invalidSignature(check.reason);
          }
        }
        if (request.bodyRefusal) throw request.bodyRefusal;
        if (request.body === undefined) throw errors.invalidJson('the body is not valid JSON');
      },
    },
    async (request, reply) => {
      const answer = await app.payments.handle({
        webhook: request.body,
        signature: acceptsUnsigned ? 'unsigned' : 'valid',
        log: request.log,
      });
      if (answer.replayed) reply.header('idempotent-replayed', 'true');
      // The stored status is one of those the schema lists (200, 404, 409, 422).
      return reply.code(answer.statusCode as 200).send(answer.body as PaymentOutcome);
    },
  );
};

export default routes;
