import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorSchema } from '../schemas/error.js';
import { readUrlIntegers } from '../schemas/integer-text.js';
import { NewOrderSchema, OrderParamsSchema, OrderSchema } from '../schemas/order.js';

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
          404: ErrorSchema,
          409: ErrorSchema,
          410: ErrorSchema,
          503: ErrorSchema,
        },
      },
    },
    async (request, reply) => {
      const { hold_id, payment_method, payment_status } = request.body;
      const { order, created } = await app.orders.place(hold_id, payment_method ?? payment_status ?? null);
      return reply.code(created ? 201 : 200).send(order);
    },
  );

  app.get(
    '/orders/:id',
    {
      preValidation: readUrlIntegers,
      schema: {
        summary: 'One order with its items',
        params: OrderParamsSchema,
        response: { 200: OrderSchema, 400: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => app.orders.find(request.params.id),
  );
};

export default routes;
