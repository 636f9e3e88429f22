import type { FastifyError } from 'fastify';
import fp from 'fastify-plugin';
import { AppError, isStoreUnavailable } from '../errors.js';

// Fastify's own request errors, by code, as this API's codes.
const FASTIFY_ERRORS: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'VALIDATION_ERROR' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'PAYLOAD_TOO_LARGE' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'INVALID_JSON' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'INVALID_JSON' },
};

/** One error handler for the whole API: every error answers `{code, message, ...details}`; 5xx hide details. */
export default fp(
  async (app) => {
    app.setErrorHandler((err: FastifyError | AppError | Error, request, reply) => {
      if (err instanceof AppError) {
        return reply.code(err.statusCode).send({ code: err.code, message: err.message, ...err.details });
      }
      const fastifyError = err as FastifyError;
      if (fastifyError.validation) {
        return reply.code(400).send({ code: 'VALIDATION_ERROR', message: fastifyError.message });
      }
      const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
      if (known) return reply.code(known.status).send({ code: known.code, message: fastifyError.message });
      // A body JSON.parse could not read (Fastify marks it 400 without a dedicated code in some versions).
      if (fastifyError.statusCode === 400 && err instanceof SyntaxError) {
        return reply.code(400).send({ code: 'INVALID_JSON', message: err.message });
      }
      if (isStoreUnavailable(err)) {
        request.log.warn({ req_id: request.id, err: err.message }, 'store unavailable');
        return reply.code(503).send({ code: 'SERVICE_UNAVAILABLE', message: 'a data store is unavailable; try again shortly (with the same Idempotency-Key, if the request had one)' });
      }
      if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
        return reply.code(fastifyError.statusCode).send({ code: 'BAD_REQUEST', message: fastifyError.message });
      }
      request.log.error({ req_id: request.id, err }, 'unexpected error');
      return reply.code(500).send({ code: 'INTERNAL_ERROR', message: 'internal error' });
    });

    app.setNotFoundHandler((request, reply) =>
      reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` }),
    );
  },
  { name: 'errors' },
);
