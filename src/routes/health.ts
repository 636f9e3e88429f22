import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';

const HealthSchema = Type.Object({
  status: Type.String(),
  redis: Type.Optional(Type.String()),
  postgres: Type.Optional(Type.String()),
});

/** Liveness and readiness: ready only while both stores answer. */
const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', { schema: { response: { 200: HealthSchema } } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { response: { 200: HealthSchema, 503: HealthSchema } } }, async (_request, reply) => {
    const [redis, postgres] = await Promise.all([
      app.redisCommands.ping().then(
        () => 'ok',
        () => 'unavailable',
      ),
      sql`SELECT 1`.execute(app.db).then(
        () => 'ok',
        () => 'unavailable',
      ),
    ]);
    const ready = redis === 'ok' && postgres === 'ok';
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', redis, postgres });
  });
};

export default routes;
