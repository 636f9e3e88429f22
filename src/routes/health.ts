import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import underPressure from '@fastify/under-pressure';
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
    status: Type.Optional(Type.String({ description: 'draining, overloaded, rebuilding or unavailable' })),
    ...healthFields,
    event_loop_delay_ms: Type.Optional(
      Type.Number({ description: 'overloaded: mean event-loop delay over the last second (ms)' }),
    ),
    heap_used_bytes: Type.Optional(Type.Integer({ description: 'overloaded: V8 heap in use (bytes)' })),
    code: Type.Optional(Type.Unsafe<'SERVICE_UNAVAILABLE'>({ type: 'string', enum: ['SERVICE_UNAVAILABLE'] })),
    message: Type.Optional(Type.String()),
  },
  {
    description: 'Not ready: draining, overloaded, rebuilding, or a store unavailable (Retry-After)',
    examples: [
      { status: 'unavailable', redis: 'unavailable', postgres: 'ok' },
      { status: 'overloaded', redis: 'ok', postgres: 'ok', event_loop_delay_ms: 1234.5, heap_used_bytes: 91_234_560 },
      { status: 'rebuilding', redis: 'ok', postgres: 'ok', rebuilding: [7] },
      { status: 'draining', redis: 'ok', postgres: 'ok' },
      ERROR_EXAMPLES.SERVICE_UNAVAILABLE,
    ],
  },
);

/**
 * Liveness and readiness: ready only while both stores answer, no product's Redis copy is being rebuilt and the
 * process is not overloaded (READY_MAX_EVENT_LOOP_DELAY_MS, READY_MAX_HEAP_USED_BYTES).
 */
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
    summary: 'Readiness: both stores answer, no product is being rebuilt, not overloaded, not stopping',
    tags: ['health'],
    response: { ...errorResponses(...ANY_ROUTE), 200: HealthSchema, 503: NotReadySchema },
  };
  // Overload is judged in a context of /readyz's own: @fastify/under-pressure would otherwise answer every
  // route 503 while the loop lags, and the API must keep serving what still reaches it.
  await app.register(async (ready) => {
    const { READY_MAX_EVENT_LOOP_DELAY_MS, READY_MAX_HEAP_USED_BYTES } = app.config;
    await ready.register(underPressure, {
      maxEventLoopDelay: READY_MAX_EVENT_LOOP_DELAY_MS,
      maxHeapUsedBytes: READY_MAX_HEAP_USED_BYTES,
      // Its hook lets the probe through: the handler says overloaded, with the figures, beside the other reasons.
      pressureHandler: () => undefined,
    });
    ready.get('/readyz', { schema: readiness }, async (_request, reply) => {
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
      if (ready.isUnderPressure()) {
        const { eventLoopDelay, heapUsed } = ready.memoryUsage();
        const delay = Number.isFinite(eventLoopDelay) ? Math.round(eventLoopDelay * 10) / 10 : null;
        return notReady().send({
          status: 'overloaded',
          redis,
          postgres,
          // Infinity (no sample at all: the loop was blocked the whole second) does not serialise as JSON.
          ...(delay === null ? {} : { event_loop_delay_ms: delay }),
          heap_used_bytes: heapUsed,
        });
      }
      const rebuilding = app.rebuilder.rebuilding();
      // Holds on those products answer 503 until their copy is rebuilt from Postgres.
      if (rebuilding.length > 0) return notReady().send({ status: 'rebuilding', redis, postgres, rebuilding });
      if (redis === 'ok' && postgres === 'ok') return { status: 'ready', redis, postgres };
      return notReady().send({ status: 'unavailable', redis, postgres });
    });
  });
};

export default routes;
