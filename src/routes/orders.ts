import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorSchema } from '../schemas/error.js';
import { productOfHold } from '../domain/hold-ids.js';
import { shownTo } from '../domain/orders.js';
import { errors } from '../errors.js';
import { parseIntegerText } from '../schemas/integer-text.js';
import { NewOrderSchema, OrderIdSchema, OrderReferenceParamsSchema, OrderSchema } from '../schemas/order.js';

const MAX_ORDER_ID = OrderIdSchema.maximum!;

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/orders',
    {
      schema: {
        summary: 'Turn a hold into an order (201), or answer the order it already became (200)',
        body: NewOrderSchema,
        response: {
          200: OrderSchema,
          201: OrderSchema,
          400: ErrorSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          404: ErrorSchema,
          409: ErrorSchema,
          410: ErrorSchema,
          429: ErrorSchema,
          503: ErrorSchema,
        },
      },
    },
    async (request, reply) => {
      const { hold_id, payment_method, payment_status } = request.body;
      const caller = await app.identify(request);
      await app.limitRate('orders', caller);
      await app.holds.checkOwner(hold_id, caller);
      const { order, created } = await app.orders.place(hold_id, payment_method ?? payment_status ?? null);
      return reply.code(created ? 201 : 200).send(shownTo(caller, order));
    },
  );

  app.get(
    '/orders/:id',
    {
      schema: {
        summary: 'One order with its items, by its hold id, or by its number (the admin and its customer only)',
        params: OrderReferenceParamsSchema,
        response: { 200: OrderSchema, 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => {
      const { id } = request.params;
      const number = parseIntegerText(id);
      const isNumber = number !== undefined && number >= 1 && number <= MAX_ORDER_ID;
      if (!isNumber && productOfHold(id) === null) {
        throw errors.validation(`params/id must be an order number from 1 to ${MAX_ORDER_ID}, or a hold id`);
      }
      return app.orders.find(isNumber ? number : id, await app.identify(request));
    },
  );
};

export default routes;
