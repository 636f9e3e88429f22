import type { FastifyReply, FastifyRequest, onSendHookHandler } from 'fastify';
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
    const record = (route: string, request: FastifyRequest, reply: FastifyReply) =>
      metrics.observeRequest(route, request.method, reply.statusCode, (performance.now() - request.arrivedAt) / 1000);
    // Each route records under its own template, known when it is declared: request.routeOptions would make an
    // object of a dozen fields at every request just to read it.
    app.addHook('onRoute', (route) => {
      const recordRoute: onSendHookHandler = (request, reply, payload, done) => {
        record(route.url, request, reply);
        done(null, payload);
      };
      route.onSend = [recordRoute, ...[route.onSend ?? []].flat()];
    });
    // A request no route matched (the not-found handler's): one label value for all of them.
    app.addHook('onSend', (request, reply, payload, done) => {
      if (request.is404) record(UNMATCHED_ROUTE, request, reply);
      done(null, payload);
    });
  },
  { name: 'metrics' },
);
