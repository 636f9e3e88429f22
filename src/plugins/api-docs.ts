import swagger, { type SwaggerTransform } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { ERROR_EXAMPLES } from '../schemas/error.js';
import { SECURITY_SCHEMES } from '../schemas/docs.js';
import { RETRY_AFTER_SECONDS } from '../settings.js';
import { CLIENT_REQUEST_ID, SAME_ORIGIN_CSP, UNCACHEABLE_PREFIXES } from './http-edge.js';

/** Where the API documentation is served: the OpenAPI document and the page that shows it. */
export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PREFIX = '/docs';

const requestIdHeader = {
  type: 'string',
  description: `the request's id: the client's X-Request-Id when it matches ${CLIENT_REQUEST_ID}, else a new UUID`,
};
const retryAfterHeader = {
  type: 'string',
  pattern: '^[0-9]+$',
  description: `seconds to wait before retrying (${RETRY_AFTER_SECONDS} on a 503; the window's rest on a 429)`,
};
const noStoreHeader = { type: 'string', enum: ['no-store'], description: 'answers about one buyer are never cached' };

/**
 * What the HTTP edge adds to every route (src/plugins/http-edge.ts, src/plugins/errors.ts), added to each route's
 * documentation here rather than to its schemas, which Fastify compiles: the X-Request-Id a client may send, and
 * the headers answers carry.
 */
const documentEdge: SwaggerTransform = ({ schema, url }) => {
  if (!schema) return { schema, url };
  const uncacheable = UNCACHEABLE_PREFIXES.some((prefix) => url.startsWith(prefix));
  const response = Object.fromEntries(
    Object.entries((schema.response ?? {}) as Record<string, Record<string, unknown>>).map(([status, answer]) => {
      const headers: Record<string, unknown> = { ...(answer.headers as object), 'x-request-id': requestIdHeader };
      if (status === '429' || status === '503') headers['retry-after'] = retryAfterHeader;
      if (uncacheable) headers['cache-control'] = noStoreHeader;
      return [status, { ...answer, headers }];
    }),
  );
  const headers = (schema.headers ?? { type: 'object', properties: {} }) as { properties?: object };
  return {
    url,
    schema: {
      ...schema,
      headers: {
        ...headers,
        properties: {
          ...headers.properties,
          'x-request-id': {
            type: 'string',
            description: `the id of the request and its log lines when it matches ${CLIENT_REQUEST_ID}; any other is replaced by a new UUID`,
          },
        },
      },
      response,
    },
  };
};

/**
 * The API documentation, made from the route schemas as the routes are declared (so registered before them):
 * GET /openapi.json, and at /docs a Swagger UI served from this process (no build step, nothing fetched from
 * elsewhere). Both public, like the API's own description of itself (SECURITY.md).
 */
export default fp(
  async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'flashsale',
          version: '0.1.0',
          description: [
            'Holds, orders and payment webhooks for flash sales.',
            '',
            'Every error answers `{code, message, ...details}` with a stable `code`; each status of each operation lists the codes it can answer. A path no route serves answers 404 NOT_FOUND. Every 503 and 429 carries Retry-After; every answer carries X-Request-Id.',
          ].join('\n'),
        },
        tags: [
          { name: 'health', description: 'liveness and readiness probes' },
          { name: 'operations', description: "what the people running a sale watch: metrics, the ops page's figures" },
          { name: 'products', description: 'the catalogue and its live stock figures' },
          { name: 'holds', description: 'units put aside for a buyer until HOLD_TTL_SECONDS pass' },
          { name: 'orders', description: 'holds turned into orders awaiting payment' },
          { name: 'webhooks', description: "the payment provider's deliveries" },
        ],
        components: {
          securitySchemes: SECURITY_SCHEMES,
          responses: {
            RouteNotFound: {
              description: 'Error: NOT_FOUND (any path and method no route serves)',
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    properties: { code: { type: 'string', enum: ['NOT_FOUND'] }, message: { type: 'string' } },
                    required: ['code', 'message'],
                  },
                  example: ERROR_EXAMPLES.NOT_FOUND,
                },
              },
            },
          },
        },
      },
      transform: documentEdge,
    });
    await app.register(swaggerUi, {
      routePrefix: DOCS_PREFIX,
      staticCSP: SAME_ORIGIN_CSP,
      // BaseLayout: the standalone layout's top bar draws its logo with an inline <style>, which the same-origin
      // CSP blocks (test/docs-page.test.ts), and its URL box would only browse away from this API.
      uiConfig: { docExpansion: 'list', deepLinking: true, layout: 'BaseLayout' },
    });
    app.get(OPENAPI_PATH, { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'api-docs' },
);
