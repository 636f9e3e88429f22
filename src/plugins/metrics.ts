import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import {
  createMetrics,
  metricsOptionsFrom,
  noMetrics,
  UNMATCHED_ROUTE,
  type Metrics,
  type MetricsRecorder,
} from '../observability/metrics.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's metrics registry (src/observability/metrics.ts); null with METRICS=off. */
    metrics: Metrics | null;
    /** Where the rules report events: the registry's recorder, or one that does nothing with METRICS=off. */
    metricEvents: MetricsRecorder;
  }
  interface FastifyRequest {
    /** performance.now() when the request reached its first hook (the request duration metric). */
    arrivedAt: number;
  }
}

/**
 * Metrics, registered before the stores so the Redis connection can time its scripts. With METRICS=off nothing
 * is made: no registry, no hook, no route, and the rules report to a recorder that does nothing.
 */
export default fp<{ config: Config }>(
  async (app, { config }) => {
    if (config.METRICS === 'off') {
      app.decorate('metrics', null);
      app.decorate('metricEvents', noMetrics);
      return;
    }
    const metrics = createMetrics(metricsOptionsFrom(config));
    app.decorate('metrics', metrics);
    app.decorate('metricEvents', metrics.recorder);
    // Timed from the first hook (after routing, before the body is read) to the answer's send, by route template,
    // never the raw URL (ids would make a series each). Not onResponse: a hook there makes Fastify put two
    // listeners on every response to time it, which cost more than the whole record.
    app.decorateRequest('arrivedAt', 0);
    app.addHook('onRequest', (request, _reply, done) => {
      request.arrivedAt = performance.now();
      done();
    });
    app.addHook('onSend', (request, reply, payload, done) => {
      metrics.observeRequest(
        request.routeOptions.url ?? UNMATCHED_ROUTE,
        request.method,
        reply.statusCode,
        (performance.now() - request.arrivedAt) / 1000,
      );
      done(null, payload);
    });
  },
  { name: 'metrics' },
);
