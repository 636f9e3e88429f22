import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import cors from '@fastify/cors';
import type { FastifyHttpOptions, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { BaseLogger, LogFn, Logger as PinoLogger } from 'pino';
import type { Config } from '../config.js';
import { errors } from '../errors.js';
import { jsonBodyParser } from '../schemas/json-input.js';

/** A client's X-Request-Id is kept when it is 1-64 characters of [A-Za-z0-9._-]; any other is replaced. */
export const CLIENT_REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

// Answers whose content is one buyer's and changes by the second: no cache, shared or private, may keep them.
export const UNCACHEABLE_PREFIXES = ['/api/holds', '/api/orders', '/ops/snapshot'];

/**
 * The Content-Security-Policy of the service's own pages (the docs UI, the ops page): every script and style
 * sheet is served from here (none inline, no inline event handler), and they fetch only from here. No
 * upgrade-insecure-requests, which would send the pages' requests to https on a plain-HTTP port.
 */
export const SAME_ORIGIN_CSP = [
  "default-src 'self'",
  "base-uri 'self'",
  "connect-src 'self'",
  "font-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "script-src 'self'",
  "script-src-attr 'none'",
  "style-src 'self'",
].join('; ');

/** What every answer carries, errors and the router's own refusals included. */
export function markAnswer(request: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', request.id);
  reply.header('x-content-type-options', 'nosniff');
}

/** The request id of a request: the client's, when well-formed (CLIENT_REQUEST_ID), else a new UUID. */
export function requestIdOf(request: IncomingMessage): string {
  const given = request.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * request.log: the service's logger with the request's id on every line (`reqId`). The child logger is made at
 * the first line written, not per request: most requests log nothing at the level set (a hold's `info` line
 * under LOG_LEVEL=warn costs one level check).
 */
class RequestLog {
  private bound: PinoLogger | undefined;

  constructor(
    private readonly log: PinoLogger,
    private readonly reqId: string,
  ) {}

  private writer(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'): LogFn {
    return (...args: Parameters<LogFn>) => {
      if (!this.log.isLevelEnabled(level)) return;
      (this.bound ??= this.log.child({ reqId: this.reqId }))[level](...args);
    };
  }

  get level(): string {
    return this.log.level;
  }

  fatal = this.writer('fatal');
  error = this.writer('error');
  warn = this.writer('warn');
  info = this.writer('info');
  debug = this.writer('debug');
  trace = this.writer('trace');
  silent: BaseLogger['silent'] = () => {};
  child = (bindings: Record<string, unknown>) => this.log.child({ reqId: this.reqId, ...bindings });
}

/**
 * The Fastify options of the HTTP edge: timeouts that cut slow clients, request ids, and request loggers that
 * carry them.
 */
export function httpEdgeOptions(config: Config, log: PinoLogger): FastifyHttpOptions<Server> {
  const timeoutMs = config.REQUEST_TIMEOUT_MS;
  return {
    // The whole request, headers and body, must arrive within this; Node answers 408 and closes otherwise.
    requestTimeout: timeoutMs,
    keepAliveTimeout: config.KEEP_ALIVE_TIMEOUT_MS,
    http: {
      // Node checks both timeouts every connectionsCheckingInterval (30 s by default, which would let a
      // client trickle for up to twice the bound): checking every second, or oftener for short bounds, keeps
      // the cut within about a second of it.
      headersTimeout: timeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(timeoutMs / 4))),
    },
    requestIdHeader: false,
    genReqId: requestIdOf,
    childLoggerFactory: (_logger, bindings) => new RequestLog(log, String(bindings.reqId)) as unknown as PinoLogger,
  };
}

/**
 * The HTTP edge: JSON bodies read with the app's checks, X-Request-Id and nosniff on every answer, no-store on
 * holds and orders, a log line per request when LOG_REQUESTS is on, and CORS for the origins CORS_ORIGINS lists
 * (none by default: no preflight is answered).
 */
export default fp(
  async (app) => {
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string' }, jsonBodyParser(app));

    // One hook for what every answer carries, errors and 404s included (it runs before anything can fail), the
    // no-store of the paths that need it, and the refusal once the service is closing (src/plugins/draining.ts):
    // as hooks of their own, those two cost about 3% of the CPU per request on the hold path (measured side by
    // side). By the raw path, not request.routeOptions, a getter that builds an object on every read.
    app.addHook('onRequest', (request, reply, done) => {
      markAnswer(request, reply);
      if (app.closing) return done(errors.unavailable('the service is stopping, so it'));
      const { url } = request;
      if (UNCACHEABLE_PREFIXES.some((prefix) => url.startsWith(prefix))) reply.header('cache-control', 'no-store');
      done();
    });

    // LOG_REQUESTS: one line per answer, with the request's id (reqId) from its logger. Added only when asked
    // for: an onResponse hook makes Fastify time every request.
    if (app.config.LOG_REQUESTS) {
      app.addHook('onResponse', (request, reply, done) => {
        const route = request.routeOptions.url;
        const ms = Math.round(reply.elapsedTime * 10) / 10;
        request.log.info({ method: request.method, route, url: request.url, status: reply.statusCode, ms }, 'request');
        done();
      });
    }

    const origins = new Set(
      app.config.CORS_ORIGINS.split(',')
        .map((origin) => origin.trim())
        .filter(Boolean),
    );
    if (origins.size > 0) {
      await app.register(cors, {
        // A listed origin is echoed back; any other gets no CORS headers, and its preflight a 404.
        origin: (origin, callback) => callback(null, origin !== undefined && origins.has(origin) ? origin : false),
        methods: ['GET', 'POST', 'PUT', 'DELETE'],
        allowedHeaders: ['content-type', 'authorization', 'idempotency-key', 'x-request-id'],
        exposedHeaders: ['retry-after', 'idempotent-replayed', 'x-request-id'],
        maxAge: 600,
      });
    }
  },
  { name: 'http-edge', dependencies: ['stores', 'draining'] },
);
