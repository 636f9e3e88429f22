import type { FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify';
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
    app.addHook('onRequest', (request, reply, done) => {
      request.arrivedAt = performance.now();
      // A request no route matched (the not-found handler's), rare: its answer is seen leave, so that the routes'
      // answers pay for no second onSend hook. One label value for all of them.
      if (request.is404) {
        const record = metrics.requestRecorder(UNMATCHED_ROUTE, request.method);
        reply.raw.once('finish', () => record(reply.statusCode, (performance.now() - request.arrivedAt) / 1000));
      }
      done();
    });
    // Each route records under its own template, known when it is declared: request.routeOptions would make an
    // object of a dozen fields at every request just to read it. Its recorder is made then too.
    app.addHook('onRoute', (route) => {
      const recordRoute = routeRecorder(metrics, route.url, route.method);
      route.onSend = [recordRoute, ...[route.onSend ?? []].flat()];
    });
  },
  { name: 'metrics' },
);

/** The onSend hook that counts a route's answers; a route of one method (most) records without a lookup. */
function routeRecorder(metrics: Metrics, url: string, method: RouteOptions['method']): onSendHookHandler {
  const elapsed = (request: FastifyRequest) => (performance.now() - request.arrivedAt) / 1000;
  if (typeof method === 'string') {
    const record = metrics.requestRecorder(url, method);
    return (request, reply, payload, done) => {
      record(reply.statusCode, elapsed(request));
      done(null, payload);
    };
  }
  return (request, reply, payload, done) => {
    metrics.requestRecorder(url, request.method)(reply.statusCode, elapsed(request));
    done(null, payload);
  };
}
