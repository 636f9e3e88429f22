/**
 * The HTTP ceiling: a bare Fastify server answering `POST /api/holds` with a constant 201 after parsing and
 * validating the same body against the same schemas as the service. No store behind it: what is left is the
 * cost of HTTP, JSON and validation on this machine, the bound the service is measured against.
 */
import Fastify from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ErrorSchema } from '../../src/schemas/error.js';
import { HoldSchema, newHoldSchema } from '../../src/schemas/hold.js';

const port = Number(process.env.PORT ?? 3300);
const app = Fastify({
  logger: false,
  ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
}).withTypeProvider<TypeBoxTypeProvider>();
const expiresAt = new Date(Date.now() + 120_000).toISOString();

app.post(
  '/api/holds',
  { schema: { body: newHoldSchema(10), response: { 201: HoldSchema, 400: ErrorSchema } } },
  async (request, reply) =>
    reply.code(201).send({
      hold_id: `${request.body.product_id}-AAAAAAAAAAAA`,
      product_id: request.body.product_id,
      qty: request.body.qty,
      customer_id: request.body.customer_id ?? null,
      status: 'held',
      expires_at: expiresAt,
    }),
);

await app.listen({ port, host: '127.0.0.1' });
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
process.once('SIGINT', () => void app.close().then(() => process.exit(0)));
