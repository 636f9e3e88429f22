import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { RETRY_AFTER_SECONDS } from '../settings.js';

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
    const notReady = () => reply.code(503).header('retry-after', RETRY_AFTER_SECONDS);
    // Stopping: never ready again, also for a probe that was running when the stop began.
    if (app.draining) return notReady().send({ status: 'draining', redis, postgres });
    const rebuilding = app.rebuilder.rebuilding();
    // Holds on those products answer 503 until their copy is rebuilt from Postgres.
    if (rebuilding.length > 0) return notReady().send({ status: 'rebuilding', redis, postgres, rebuilding });
    if (redis === 'ok' && postgres === 'ok') return { status: 'ready', redis, postgres };
    return notReady().send({ status: 'unavailable', redis, postgres });
  });
};

export default routes;
