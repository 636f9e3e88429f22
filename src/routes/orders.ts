import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ANY_CALLER } from '../schemas/docs.js';
import { ANY_ROUTE, BODY, errorResponses, IDENTIFIED, PATH_PARAMS } from '../schemas/error.js';
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
        description:
          'Safe to retry: a hold converts once, and every later request for it is answered its order (200). The hold must still be held: 410 once it expired, 409 once released or lost in a Redis data loss.',
        tags: ['orders'],
        security: ANY_CALLER,
        body: NewOrderSchema,
        response: {
          200: OrderSchema,
          201: OrderSchema,
          ...errorResponses(
            ...ANY_ROUTE,
            ...BODY,
            ...IDENTIFIED,
            'CUSTOMER_TOKEN_REQUIRED',
            'NOT_YOUR_HOLD',
            'HOLD_NOT_FOUND',
            // From the owner check's look at the hold, when Redis loses the product again right after its rebuild.
            'PRODUCT_NOT_FOUND',
            'HOLD_RELEASED',
            'HOLD_LOST',
            'HOLD_EXPIRED',
            'RATE_LIMITED',
          ),
        },
      },
    },
    async (request, reply) => {
      const { hold_id, payment_method, payment_status } = request.body;
      const caller = await app.identify(request);
      await app.limitRate('orders', caller);
      await app.holds.checkOwner(hold_id, caller);
      const { order, created } = await app.orders.place(hold_id, payment_method ?? payment_status ?? null, request.log);
      return reply.code(created ? 201 : 200).send(shownTo(caller, order));
    },
  );

  app.get(
    '/orders/:id',
    {
      schema: {
        summary: 'One order with its items, by its hold id, or by its number (the admin and its customer only)',
        tags: ['orders'],
        security: ANY_CALLER,
        params: OrderReferenceParamsSchema,
        response: {
          200: OrderSchema,
          ...errorResponses(...ANY_ROUTE, ...PATH_PARAMS, ...IDENTIFIED, 'CUSTOMER_TOKEN_REQUIRED', 'ORDER_NOT_FOUND'),
        },
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
