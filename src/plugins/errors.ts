import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { AppError, errorBody, StoreUnavailableError, type ErrorCode } from '../errors.js';
import { RETRY_AFTER_SECONDS } from '../settings.js';
import { markAnswer } from './http-edge.js';

// Fastify's own request errors, by code, as this API's codes.
const FASTIFY_ERRORS: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'VALIDATION_ERROR',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON',
};

/**
 * Fastify's `frameworkErrors`: a request refused by the router before any hook runs (a path parameter that is
 * badly percent-encoded, or longer than the router reads), answered like every other refusal (a stable code, the
 * request id, nosniff) rather than by Fastify's own body (codes FST_ERR_BAD_URL 400, FST_ERR_MAX_PARAM_LENGTH 414).
 */
export function frameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  // No hook runs for these: the edge's headers are added here.
  markAnswer(request, reply);
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    // No parameter of this API takes more than 64 characters: as its schema would say, a 400.
    reply.code(400).send(errorBody('VALIDATION_ERROR', 'a path parameter is longer than any this API takes'));
    return;
  }
  reply.code(400).send(errorBody('BAD_REQUEST', err.message));
}

/**
 * The one error handler: every error answers `{code, message, ...details}` (src/errors.ts makes the body).
 * A store that could not be reached is a 503 with Retry-After; anything not recognised is a bug, a 500 whose
 * details are logged, not shown.
 */
export default fp(
  async (app) => {
    app.setErrorHandler((err: FastifyError | AppError | Error, request, reply) => {
      if (err instanceof AppError) {
        if (err.statusCode === 503) reply.header('retry-after', RETRY_AFTER_SECONDS);
        if (err.code === 'RATE_LIMITED') reply.header('retry-after', String(err.details?.retry_after_seconds));
        return reply.code(err.statusCode).send(err.body());
      }
      if (err instanceof StoreUnavailableError) {
        request.log.warn({ store: err.store, err: err.message }, 'store unavailable');
        return reply
          .code(503)
          .header('retry-after', RETRY_AFTER_SECONDS)
          .send(
            errorBody(
              'SERVICE_UNAVAILABLE',
              'a data store is unavailable; try again shortly (with the same Idempotency-Key, if the request had one)',
            ),
          );
      }
      const fastifyError = err as FastifyError;
      if (fastifyError.validation) {
        return reply.code(400).send(errorBody('VALIDATION_ERROR', fastifyError.message));
      }
      const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
      if (known) return reply.code(fastifyError.statusCode ?? 400).send(errorBody(known, fastifyError.message));
      // A body JSON.parse could not read (Fastify marks it 400 without a dedicated code in some versions).
      if (fastifyError.statusCode === 400 && err instanceof SyntaxError) {
        return reply.code(400).send(errorBody('INVALID_JSON', err.message));
      }
      if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
        return reply.code(fastifyError.statusCode).send(errorBody('BAD_REQUEST', fastifyError.message));
      }
      request.log.error({ err }, 'unexpected error');
      return reply.code(500).send(errorBody('INTERNAL_ERROR', 'internal error'));
    });

    app.setNotFoundHandler((request, reply) => {
      app.timeUnmatchedAnswer(request, reply);
      return reply.code(404).send(errorBody('NOT_FOUND', `no route ${request.method} ${request.url}`));
    });
  },
  { name: 'errors' },
);
