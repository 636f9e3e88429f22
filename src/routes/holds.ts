import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { holdCustomer, scopedIdempotencyKey } from '../domain/callers.js';
import type { HoldRequest } from '../domain/holds.js';
import { ErrorSchema } from '../schemas/error.js';
import {
  HoldParamsSchema,
  HoldRefusalSchema,
  HoldSchema,
  IdempotencyKeySchema,
  newHoldSchema,
} from '../schemas/hold.js';

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/holds',
    {
      schema: {
        summary: 'Put units of a product on hold',
        headers: Type.Object({ 'idempotency-key': Type.Optional(IdempotencyKeySchema) }),
        body: newHoldSchema(app.settings.maxQtyPerHold),
        response: {
          201: HoldSchema,
          400: ErrorSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          404: ErrorSchema,
          409: HoldRefusalSchema,
          422: ErrorSchema,
          429: ErrorSchema,
          503: ErrorSchema,
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
          reply.code(409).send(refusal);
          return;
        }
      }
      return (async () => {
        const caller = await app.identify(request);
        const hold: HoldRequest = {
          productId: product_id,
          qty,
          customerId: holdCustomer(app.customerTrust, caller, customer_id ?? null),
          idempotencyKey: idempotencyKey === undefined ? undefined : scopedIdempotencyKey(caller, idempotencyKey),
        };
        await app.limitRate('holds', caller);
        const placed = await app.holds.place(hold);
        if (placed.replayed) reply.header('idempotent-replayed', 'true');
        if (placed.refusal) return reply.code(409).send(placed.refusal);
        return reply.code(201).send(placed.hold);
      })();
    },
  );

  app.get(
    '/holds/:id',
    {
      schema: {
        summary: 'One hold, as it stands now',
        params: HoldParamsSchema,
        response: { 200: HoldSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => app.holds.find(request.params.id, await app.identify(request)),
  );

  app.delete(
    '/holds/:id',
    {
      schema: {
        summary: 'Release a hold; its units go back to sale',
        params: HoldParamsSchema,
        response: {
          200: HoldSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          404: ErrorSchema,
          409: ErrorSchema,
          503: ErrorSchema,
        },
      },
    },
    async (request) => app.holds.release(request.params.id, await app.identify(request)),
  );
};

export default routes;
