import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { ANY_ROUTE, ERROR_EXAMPLES, errorResponses } from '../schemas/error.js';
import { RETRY_AFTER_SECONDS } from '../settings.js';

const healthFields = {
  redis: Type.Optional(Type.String({ description: 'ok or unavailable' })),
  postgres: Type.Optional(Type.String({ description: 'ok or unavailable' })),
  /** Products whose Redis copy this instance is rebuilding from Postgres after a data loss. */
  rebuilding: Type.Optional(
    Type.Array(Type.Integer(), { description: 'products whose Redis copy is being rebuilt from Postgres' }),
  ),
};

const HealthSchema = Type.Object(
  { status: Type.String({ description: 'ok (liveness) or ready' }), ...healthFields },
  { examples: [{ status: 'ready', redis: 'ok', postgres: 'ok' }, { status: 'ok' }] },
);

/**
 * Not ready: why in `status`; or, for a probe that arrives once the close has begun, the error answer
 * SERVICE_UNAVAILABLE (src/plugins/draining.ts). One object with optional fields, not a union, so both serialise.
 */
const NotReadySchema = Type.Object(
  {
    status: Type.Optional(Type.String({ description: 'draining, rebuilding or unavailable' })),
    ...healthFields,
    code: Type.Optional(Type.Unsafe<'SERVICE_UNAVAILABLE'>({ type: 'string', enum: ['SERVICE_UNAVAILABLE'] })),
    message: Type.Optional(Type.String()),
  },
  {
    description: 'Not ready: draining, rebuilding, or a store unavailable (Retry-After)',
    examples: [
      { status: 'unavailable', redis: 'unavailable', postgres: 'ok' },
      { status: 'rebuilding', redis: 'ok', postgres: 'ok', rebuilding: [7] },
      { status: 'draining', redis: 'ok', postgres: 'ok' },
      ERROR_EXAMPLES.SERVICE_UNAVAILABLE,
    ],
  },
);

/** Liveness and readiness: ready only while both stores answer and no product's Redis copy is being rebuilt. */
const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness: the process answers',
        tags: ['health'],
        response: { 200: HealthSchema, ...errorResponses(...ANY_ROUTE) },
      },
    },
    async () => ({ status: 'ok' }),
  );

  const readiness = {
    summary: 'Readiness: both stores answer, no product is being rebuilt, the service is not stopping',
    tags: ['health'],
    response: { ...errorResponses(...ANY_ROUTE), 200: HealthSchema, 503: NotReadySchema },
  };
  app.get('/readyz', { schema: readiness }, async (_request, reply) => {
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
