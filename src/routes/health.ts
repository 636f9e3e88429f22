import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';

const HealthSchema = Type.Object({
  status: Type.String(),
  redis: Type.Optional(Type.String()),
  postgres: Type.Optional(Type.String()),
  /** Products whose Redis copy this instance is rebuilding from Postgres after a data loss. */
  rebuilding: Type.Optional(Type.Array(Type.Integer())),
});

/** Liveness and readiness: ready only while both stores answer and no product's Redis copy is being rebuilt. */
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
    // Stopping: never ready again, also for a probe that was running when the stop began.
    if (app.draining) return reply.code(503).send({ status: 'draining', redis, postgres });
    const rebuilding = app.rebuilder.rebuilding();
    if (rebuilding.length > 0) {
      // Holds on those products answer 503 until their copy is rebuilt from Postgres.
      return reply.code(503).header('retry-after', '1').send({ status: 'rebuilding', redis, postgres, rebuilding });
    }
    const ready = redis === 'ok' && postgres === 'ok';
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', redis, postgres });
  });
};

export default routes;
