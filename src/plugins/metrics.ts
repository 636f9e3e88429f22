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
    // By route template, never the raw URL (ids would make a series each); reply.elapsedTime is Fastify's own
    // measure from the request's arrival to the answer's last byte.
    app.addHook('onResponse', (request, reply, done) => {
      metrics.observeRequest(
        request.routeOptions.url ?? UNMATCHED_ROUTE,
        request.method,
        reply.statusCode,
        reply.elapsedTime / 1000,
      );
      done();
    });
  },
  { name: 'metrics' },
);
