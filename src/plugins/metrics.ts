import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify';
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
    /** Times the answer of a request no route matched (the not-found handler calls it); nothing with METRICS=off. */
    timeUnmatchedAnswer(request: FastifyRequest, reply: FastifyReply): void;
  }
}

// A request's arrival is stamped by the request-id function Fastify calls first for every request, not by an
// onRequest hook: each hook on the hot path cost about 3% of a sold-out answer's CPU, measured side by side with
// `npm run bench -- --metrics-cost --simultaneous` (no hook 1.00x, one 1.03x, two 1.055x METRICS=off's CPU).
const ARRIVED_AT = Symbol('flashsale.arrivedAt');
type StampedRequest = IncomingMessage & { [ARRIVED_AT]?: number };

/** The request-id function, also stamping when the request arrived (performance.now()): see ARRIVED_AT. */
export function stampingArrival(genReqId: (req: IncomingMessage) => string): (req: IncomingMessage) => string {
  return (req) => {
    (req as StampedRequest)[ARRIVED_AT] = performance.now();
    return genReqId(req);
  };
}

/** Seconds since the request arrived. */
function elapsed(request: FastifyRequest): number {
  return (performance.now() - ((request.raw as StampedRequest)[ARRIVED_AT] ?? performance.now())) / 1000;
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
      app.decorate('timeUnmatchedAnswer', () => {});
      return;
    }
    const metrics = createMetrics(metricsOptionsFrom(config));
    app.decorate('metrics', metrics);
    app.decorate('metricEvents', metrics.recorder);
    // Timed from the request's arrival (stampingArrival) to the answer's send, by route template, never the raw
    // URL (ids would make a series each). Not onResponse: a hook there makes Fastify put two listeners on every
    // response to time it, which cost more than the whole record.
    // Each route records under its own template, known when it is declared: request.routeOptions would make an
    // object of a dozen fields at every request just to read it. Its recorder is made then too.
    app.addHook('onRoute', (route) => {
      const recordRoute = routeRecorder(metrics, route.url, route.method);
      route.onSend = [recordRoute, ...[route.onSend ?? []].flat()];
    });
    // A request no route matched (rare): its answer is seen leave. One label value for all of them.
    app.decorate('timeUnmatchedAnswer', (request: FastifyRequest, reply: FastifyReply) => {
      const record = metrics.requestRecorder(UNMATCHED_ROUTE, request.method);
      reply.raw.once('finish', () => record(reply.statusCode, elapsed(request)));
    });
  },
  { name: 'metrics' },
);

/** The onSend hook that counts a route's answers; a route of one method (most) records without a lookup. */
function routeRecorder(metrics: Metrics, url: string, method: RouteOptions['method']): onSendHookHandler {
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
