import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyInstance, type RouteOptions } from 'fastify';
import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { Config } from './config.js';
import adminAuth from './plugins/admin-auth.js';
import background from './plugins/background.js';
import callers, { trustProxyOption } from './plugins/callers.js';
import domain from './plugins/domain.js';
import draining from './plugins/draining.js';
import apiDocs from './plugins/api-docs.js';
import errorHandling, { frameworkErrors } from './plugins/errors.js';
import httpEdge, { httpEdgeOptions } from './plugins/http-edge.js';
import metrics, { stampingArrival } from './plugins/metrics.js';
import stores from './plugins/stores.js';
import { countersFromRegistry, noCounters } from './ops/counters.js';
import healthRoutes from './routes/health.js';
import holdRoutes from './routes/holds.js';
import metricsRoutes from './routes/metrics.js';
import opsRoutes from './routes/ops.js';
import orderRoutes from './routes/orders.js';
import productRoutes from './routes/products.js';
import webhookRoutes from './routes/webhooks.js';

/** Pretty logs for people at a terminal; JSON lines everywhere else. */
function loggerOptions(config: Config, destination: DestinationStream | undefined) {
  const pretty = !destination && process.stdout.isTTY && canResolve('pino-pretty');
  return {
    level: config.LOG_LEVEL,
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } } : {}),
  };
}

function canResolve(specifier: string): boolean {
  try {
    import.meta.resolve(specifier);
    return true;
  } catch {
    return false;
  }
}

/** The whole service as one Fastify instance: stores first, then the rules and their loops, then the routes. */
export interface AppOptions {
  /** The local clock the sold-out cache reads (Date.now unless a test moves time itself). */
  now?: () => number;
  /** Told of every route as it is declared (the API documentation's tests walk them). */
  onRoute?: (route: RouteOptions) => void;
  /** Where the JSON log lines go: stdout unless given (a test that reads them). */
  logDestination?: DestinationStream;
}

/** The HTTP edge's options; with metrics on, its request ids also stamp each request's arrival. */
function edgeOptions(config: Config, log: PinoLogger) {
  const options = httpEdgeOptions(config, log);
  if (config.METRICS !== 'off' && options.genReqId) options.genReqId = stampingArrival(options.genReqId);
  return options;
}

export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const log = options.logDestination
    ? pino(loggerOptions(config, options.logDestination), options.logDestination)
    : pino(loggerOptions(config, undefined));
  const app = Fastify({
    // The service logs one line per domain event, and one per request only with LOG_REQUESTS (its own hook in
    // src/plugins/http-edge.ts, so nothing is timed otherwise). Fastify given a logger of its own would
    // still add two listeners to every response just to time it for a completion line (~0.7 us a request,
    // measured on the sold-out path), so it gets none: the service's pino logger stands in as app.log, and
    // as request.log (with the request's id: src/plugins/http-edge.ts, like the timeouts that cut slow clients).
    logger: false,
    ...edgeOptions(config, log),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.BODY_LIMIT_BYTES,
    // On close: idle keep-alive connections are closed at once, requests arriving meanwhile (on connections
    // still open) are answered 503 with `Connection: close`, /readyz among them, so a load balancer drains.
    forceCloseConnections: 'idle',
    // src/plugins/draining.ts answers while closing, with Retry-After.
    return503OnClosing: false,
    // The router's own refusals (bad percent-encoding, an over-long parameter) answer with this API's codes.
    frameworkErrors,
    // Behind a load balancer, the client address (rate limits, idempotency scopes) is read from X-Forwarded-For.
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    ajv: {
      // Wrong types are refused, not coerced, and unknown fields are refused, not silently dropped.
      customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.log = log;
  if (options.onRoute) app.addHook('onRoute', options.onRoute);

  // JSON in and out: a text/plain body is refused with 415 rather than handed to a route as a string.
  app.removeContentTypeParser('text/plain');

  await app.register(draining);
  // Before the stores: the Redis connection times its scripts for it.
  await app.register(metrics, { config });
  await app.register(stores, { config });
  await app.register(errorHandling);
  await app.register(httpEdge);
  await app.register(adminAuth);
  await app.register(callers, { config });
  await app.register(domain, { now: options.now });
  await app.register(background);
  // Before the routes: it documents each route as it is declared (GET /openapi.json, the UI at /docs).
  await app.register(apiDocs);
  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  await app.register(productRoutes, { prefix: '/api' });
  await app.register(holdRoutes, { prefix: '/api' });
  await app.register(orderRoutes, { prefix: '/api' });
  await app.register(webhookRoutes, { prefix: '/api' });
  // The live sale page (/ops) and the figures it polls: its rates from the metrics, when they are on.
  const counted = app.metrics;
  await app.register(opsRoutes, {
    counters: counted ? countersFromRegistry(counted.registry, counted.refreshLive) : noCounters,
  });
  return app;
}
