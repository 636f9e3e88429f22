import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { holdCustomer, scopedIdempotencyKey } from '../domain/callers.js';
import { AppError } from '../errors.js';
import type { HoldRequest } from '../domain/holds.js';
import { ANY_CALLER, replayable } from '../schemas/docs.js';
import { ANY_ROUTE, BODY, errorResponses, IDENTIFIED, PATH_PARAMS } from '../schemas/error.js';
import {
  HoldParamsSchema,
  HoldRefusalSchema,
  HoldSchema,
  IdempotencyKeySchema,
  newHoldSchema,
} from '../schemas/hold.js';

/**
 * What looking a hold up can answer (src/domain/holds.ts lookUp and ownerCheck): PRODUCT_NOT_FOUND only when Redis
 * loses the product again between its rebuild and the second look.
 */
const HOLD_LOOKUP = ['CUSTOMER_TOKEN_REQUIRED', 'NOT_YOUR_HOLD', 'HOLD_NOT_FOUND', 'PRODUCT_NOT_FOUND'] as const;

/** Every answer of POST /api/holds is counted here, the one place that sees them all (src/observability/metrics.ts). */
const routes: FastifyPluginAsyncTypebox = async (app) => {
  const events = app.metricEvents;
  app.post(
    '/holds',
    {
      schema: {
        summary: 'Put units of a product on hold',
        description:
          'Granted (201) or refused for want of units (409 INSUFFICIENT_STOCK, CUSTOMER_LIMIT_EXCEEDED, with the figures). With an Idempotency-Key, a repeat of the same request within IDEMPOTENCY_TTL_SECONDS is answered the first answer (Idempotent-Replayed: true); the same key with another body is 422.',
        tags: ['holds'],
        security: ANY_CALLER,
        headers: Type.Object({ 'idempotency-key': Type.Optional(IdempotencyKeySchema) }),
        body: newHoldSchema(app.settings.maxQtyPerHold),
        response: {
          ...errorResponses(
            ...ANY_ROUTE,
            ...BODY,
            ...IDENTIFIED,
            'CUSTOMER_ID_REQUIRED',
            'CUSTOMER_TOKEN_REQUIRED',
            'CUSTOMER_MISMATCH',
            'PRODUCT_NOT_FOUND',
            'IDEMPOTENCY_KEY_REUSED',
            'RATE_LIMITED',
          ),
          201: replayable(HoldSchema),
          409: replayable(HoldRefusalSchema),
        },
      },
    },
    (request, reply) => {
      const { product_id, qty, customer_id } = request.body;
      const idempotencyKey = request.headers['idempotency-key'];
      // The sold-out tail of a sale is answered here, without a promise or a round trip (nor a rate-limit count:
      // it costs nothing and changes nothing). Only for a request that names nobody: a token or a claimed
      // customer is checked first.
      if (request.headers.authorization === undefined && (customer_id == null || !app.customerTrust.tokens)) {
        const refusal = app.holds.refusalWithoutRedis({ productId: product_id, qty, customerId: null, idempotencyKey });
        if (refusal) {
          events.holdRefused(product_id, refusal.code, refusal.available_stock);
          reply.code(409).send(refusal);
          return;
        }
      }
      return (async () => {
        let placed;
        try {
          const caller = await app.identify(request);
          const hold: HoldRequest = {
            productId: product_id,
            qty,
            customerId: holdCustomer(app.customerTrust, caller, customer_id ?? null),
            idempotencyKey: idempotencyKey === undefined ? undefined : scopedIdempotencyKey(caller, idempotencyKey),
          };
          await app.limitRate('holds', caller);
          placed = await app.holds.place(hold);
        } catch (err) {
          if (err instanceof AppError && err.statusCode < 500) events.holdRefused(product_id, err.code);
          throw err;
        }
        if (placed.replayed) reply.header('idempotent-replayed', 'true');
        if (placed.refusal) {
          if (!placed.replayed) events.holdRefused(product_id, placed.refusal.code, placed.refusal.available_stock);
          return reply.code(409).send(placed.refusal);
        }
        if (!placed.replayed) events.holdCreated(product_id, qty);
        return reply.code(201).send(placed.hold);
      })();
    },
  );

  app.get(
    '/holds/:id',
    {
      schema: {
        summary: 'One hold, as it stands now',
        tags: ['holds'],
        security: ANY_CALLER,
        params: HoldParamsSchema,
        response: { 200: HoldSchema, ...errorResponses(...ANY_ROUTE, ...PATH_PARAMS, ...IDENTIFIED, ...HOLD_LOOKUP) },
      },
    },
    async (request) => app.holds.find(request.params.id, await app.identify(request)),
  );

  app.delete(
    '/holds/:id',
    {
      schema: {
        summary: 'Release a hold; its units go back to sale',
        description:
          'A hold that already expired or was released is answered as it is (200), so a retry is safe. A DELETE with a body has it read like any other (hence 400/413/415).',
        tags: ['holds'],
        security: ANY_CALLER,
        params: HoldParamsSchema,
        response: {
          200: HoldSchema,
          ...errorResponses(
            ...ANY_ROUTE,
            ...PATH_PARAMS,
            ...BODY,
            ...IDENTIFIED,
            ...HOLD_LOOKUP,
            'HOLD_CONVERTED',
            'HOLD_CONVERTING',
          ),
        },
      },
    },
    async (request) => app.holds.release(request.params.id, await app.identify(request)),
  );
};

export default routes;
