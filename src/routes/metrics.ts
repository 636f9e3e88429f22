import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ADMIN_ONLY } from '../schemas/docs.js';
import { ADMIN, ANY_ROUTE, errorResponses } from '../schemas/error.js';

const EXPOSITION_EXAMPLE = [
  '# HELP flashsale_holds_created_total holds granted',
  '# TYPE flashsale_holds_created_total counter',
  'flashsale_holds_created_total{product="1"} 1532',
  '',
].join('\n');

/**
 * GET /metrics, Prometheus text: behind the admin token with METRICS=admin, open to anyone with METRICS=open
 * (a private network only), absent with METRICS=off. Every metric is listed in the README's Metrics section.
 */
const routes: FastifyPluginAsyncTypebox = async (app) => {
  const metrics = app.metrics;
  if (!metrics) return;
  const admin = app.config.METRICS === 'admin';
  app.get(
    '/metrics',
    {
      ...(admin ? { onRequest: app.verifyAdmin } : {}),
      schema: {
        summary: `Prometheus metrics (text format 0.0.4)${admin ? ' (admin)' : ''}`,
        description:
          'Counters of holds, refusals, orders and webhooks, request and Redis script latencies, live stock figures of a bounded set of products, sweeper lag and the sampled invariant drift; METRICS=admin|open|off.',
        tags: ['operations'],
        ...(admin ? { security: ADMIN_ONLY } : {}),
        response: {
          200: {
            description: 'the text exposition',
            content: { 'text/plain': { schema: Type.String({ examples: [EXPOSITION_EXAMPLE] }) } },
          },
          ...errorResponses(...ANY_ROUTE, ...(admin ? ADMIN : [])),
        },
      },
    },
    async (_request, reply) => reply.type(metrics.contentType).send(await metrics.exposition()),
  );
};

export default routes;
