import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { SaleCounters } from '../ops/counters.js';
import { createSaleWatch } from '../ops/sale-watch.js';
import { SAME_ORIGIN_CSP } from '../plugins/http-edge.js';
import { ADMIN_ONLY } from '../schemas/docs.js';
import { ADMIN, ANY_ROUTE, errorResponses } from '../schemas/error.js';
import { readUrlIntegers } from '../schemas/integer-text.js';
import { OpsQuerySchema, OpsSnapshotSchema } from '../schemas/ops.js';

/** The live sale page, and where its own files are served (neither is in the API documentation). */
export const OPS_PAGE = '/ops';
export const OPS_FILES = '/ops/static/';

const PAGE_DIR = new URL('../../public/ops/', import.meta.url);
const requireFrom = createRequire(import.meta.url);

interface PageFile {
  body: Buffer;
  type: string;
  etag: string;
  cacheControl: string;
}

// The page's own files are revalidated on every load (an upgrade shows at once; unchanged, a 304). uPlot changes
// only with its npm version, so browsers keep it for a day without asking.
const REVALIDATE = 'no-cache';
const VENDOR = 'public, max-age=86400';

function pageFile(path: string, type: string, cacheControl: string): PageFile {
  const body = readFileSync(path);
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
  return { body, type, etag, cacheControl };
}

/** Read once at start: a handful of small files, served from memory. */
function loadPageFiles(): { page: PageFile; files: Map<string, PageFile> } {
  const own = (name: string) => fileURLToPath(new URL(name, PAGE_DIR));
  const js = 'application/javascript; charset=utf-8';
  const css = 'text/css; charset=utf-8';
  return {
    page: pageFile(own('index.html'), 'text/html; charset=utf-8', REVALIDATE),
    files: new Map([
      ['ops.js', pageFile(own('ops.js'), js, REVALIDATE)],
      ['ops.css', pageFile(own('ops.css'), css, REVALIDATE)],
      ['uplot.min.js', pageFile(requireFrom.resolve('uplot/dist/uPlot.iife.min.js'), js, VENDOR)],
      ['uplot.min.css', pageFile(requireFrom.resolve('uplot/dist/uPlot.min.css'), css, VENDOR)],
    ]),
  };
}

function send(request: FastifyRequest, reply: FastifyReply, file: PageFile) {
  reply
    .header('content-security-policy', SAME_ORIGIN_CSP)
    .header('cache-control', file.cacheControl)
    .header('etag', file.etag)
    .type(file.type);
  if (request.headers['if-none-match'] === file.etag) return reply.code(304).send();
  return reply.send(file.body);
}

/**
 * The live sale page at /ops: an HTML page and its scripts (public; they hold no data), and GET /ops/snapshot,
 * the figures it polls with the admin token. The rates come from `counters` (the metrics registry).
 */
const routes: FastifyPluginAsyncTypebox<{ counters: SaleCounters }> = async (app, { counters }) => {
  const { page, files } = loadPageFiles();
  const watch = createSaleWatch({ catalogue: app.catalogue, counters });

  app.get(OPS_PAGE, { schema: { hide: true } }, async (request, reply) => send(request, reply, page));
  app.get<{ Params: { file: string } }>(`${OPS_FILES}:file`, { schema: { hide: true } }, async (request, reply) => {
    const file = files.get(request.params.file);
    return file ? send(request, reply, file) : reply.callNotFound();
  });

  app.get(
    '/ops/snapshot',
    {
      onRequest: app.verifyAdmin,
      preValidation: readUrlIntegers,
      schema: {
        summary: "The live sale's figures (admin): stock per product, rates over the last minutes",
        description:
          "What the page at /ops polls once a second. Stock figures are read from Redis as GET /api/products/:id reads them; the rates, 503s, webhook results and sweeper lag come from this instance's metrics. Samples are taken when asked, at most one a second, and kept five minutes.",
        tags: ['operations'],
        security: ADMIN_ONLY,
        querystring: OpsQuerySchema,
        response: { 200: OpsSnapshotSchema, ...errorResponses(...ANY_ROUTE, ...ADMIN, 'VALIDATION_ERROR') },
      },
    },
    async (request) => watch.snapshot(request.query.after ?? 0),
  );
};

export default routes;
