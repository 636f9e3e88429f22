import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { RouteOptions } from 'fastify';
import t from 'tap';
import { ErrorCodes, type ErrorCode } from '../src/errors.js';
import { OPS_FILES, OPS_PAGE } from '../src/routes/ops.js';
import { ERROR_EXAMPLES } from '../src/schemas/error.js';
import { admin, buildTestApp, createProduct } from './support/app.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed document, read by path
type Json = Record<string, any>;

/** The operations of the document, each with its path, method and the statuses of its answers. */
function operationsOf(document: Json): { path: string; method: string; operation: Json }[] {
  return Object.entries(document.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json).map(([method, operation]) => ({ path, method, operation: operation as Json })),
  );
}

/** `/api/holds/:id` as the document writes it: `/api/holds/{id}`. */
const documentPath = (url: string) => url.replace(/:([A-Za-z_]+)/g, '{$1}');

/** The codes an error answer's schema lists: an enum, or (the hold refusal's) a union of single values. */
function codesOf(schema: Json | undefined): string[] {
  const code = schema?.properties?.code as Json | undefined;
  return code?.enum ?? code?.anyOf?.flatMap((member: Json) => member.enum ?? [member.const]) ?? [];
}

// The API's routes: not the documentation's own, nor the pages' files (the docs UI, the ops page).
const serviceOwn = (route: RouteOptions) =>
  route.method !== 'HEAD' &&
  !route.url.startsWith('/docs') &&
  route.url !== '/openapi.json' &&
  route.url !== OPS_PAGE &&
  !route.url.startsWith(OPS_FILES);

t.test('GET /openapi.json documents every route, status and error code the service answers', async (t) => {
  const routes: RouteOptions[] = [];
  const { app } = await buildTestApp(t, {}, { onRoute: (route) => routes.push(route) });
  const response = await app.inject({ url: '/openapi.json' });
  t.equal(response.statusCode, 200);
  t.equal(response.headers['x-content-type-options'], 'nosniff');
  const document = response.json() as Json;

  t.test('is a valid OpenAPI 3.1 document', async (t) => {
    t.equal(document.openapi, '3.1.0');
    // validate() dereferences in place: it gets a copy.
    await t.resolves(SwaggerParser.validate(structuredClone(document) as never), 'swagger-parser finds no error');
    t.same(Object.keys(document.components.securitySchemes).sort(), [
      'adminToken',
      'customerToken',
      'webhookSignature',
    ]);
  });

  t.test('every route appears, with every status its schema answers', async (t) => {
    const own = routes.filter(serviceOwn);
    t.ok(own.length >= 10, `${own.length} routes declared`);
    for (const route of own) {
      const methods = [route.method].flat().map((m) => m.toLowerCase());
      for (const method of methods) {
        const operation = document.paths[documentPath(route.url)]?.[method] as Json | undefined;
        if (!operation) {
          t.fail(`${method.toUpperCase()} ${route.url} is documented`);
          continue;
        }
        const statuses = Object.keys((route.schema?.response ?? {}) as object).sort();
        t.same(Object.keys(operation.responses).sort(), statuses, `${method.toUpperCase()} ${route.url}: statuses`);
        t.ok(operation.summary, `${method.toUpperCase()} ${route.url} has a summary`);
        t.ok(operation.tags?.length, `${method.toUpperCase()} ${route.url} has a tag`);
        for (const [status, answer] of Object.entries(operation.responses as Json)) {
          t.ok(answer.headers?.['x-request-id'], `${route.url} ${status} documents X-Request-Id`);
          if (status === '503' || status === '429') {
            t.ok(answer.headers?.['retry-after'], `${method.toUpperCase()} ${route.url} ${status} has Retry-After`);
          }
        }
      }
    }
    // Nothing documented that the service does not serve.
    t.equal(operationsOf(document).length, own.flatMap((route) => [route.method].flat()).length);
    t.ok(document.paths['/api/holds'].post.parameters.some((p: Json) => p.name === 'idempotency-key'));
    t.ok(document.paths['/api/holds'].post.responses['201'].headers['idempotent-replayed']);
    t.same(document.paths['/api/products'].post.security, [{ adminToken: [] }]);
    t.same(document.paths['/api/webhooks/payment'].post.security, [{ webhookSignature: [] }]);
  });

  t.test('every error code is documented, at the status src/errors.ts gives it', async (t) => {
    const documented = new Set<string>(['NOT_FOUND']); // the not-found handler's: components.responses
    t.same(document.components.responses.RouteNotFound.content['application/json'].schema.properties.code.enum, [
      'NOT_FOUND',
    ]);
    for (const { path, method, operation } of operationsOf(document)) {
      for (const [status, answer] of Object.entries(operation.responses as Json)) {
        if (Number(status) < 400) continue;
        const codes = codesOf(answer.content?.['application/json']?.schema);
        if (!t.ok(codes.length, `${method.toUpperCase()} ${path} ${status} lists its codes`)) continue;
        for (const listed of codes) {
          documented.add(listed);
          t.equal(ErrorCodes[listed as ErrorCode], Number(status), `${path} ${status}: ${listed} is a ${status}`);
        }
      }
    }
    // A code added to src/errors.ts without a route documenting it fails here.
    t.same([...documented].sort(), Object.keys(ErrorCodes).sort(), 'every code of src/errors.ts is documented');
    for (const [code, example] of Object.entries(ERROR_EXAMPLES)) t.equal(example.code, code, `example of ${code}`);
  });

  t.test('every example validates against its schema', async (t) => {
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats.default(ajv);
    let checked = 0;
    const check = (schema: Json, value: unknown, where: string) => {
      const valid = ajv.validate(schema, value);
      t.ok(valid, `${where}: ${ajv.errorsText(ajv.errors)}`);
      checked++;
    };
    // Examples nested in schemas (OpenAPI 3.1 keeps `examples` arrays in them).
    const walk = (schema: unknown, where: string): void => {
      if (schema === null || typeof schema !== 'object') return;
      const node = schema as Json;
      if (Array.isArray(node.examples) && (node.type !== undefined || node.properties || node.anyOf)) {
        node.examples.forEach((example: unknown, i: number) => check(node, example, `${where} examples[${i}]`));
      }
      for (const [key, value] of Object.entries(node)) if (key !== 'examples') walk(value, `${where}/${key}`);
    };
    const media = (content: Json | undefined, where: string, required: boolean) => {
      const json = content?.['application/json'];
      if (!json) return;
      const examples = [
        ...(json.example !== undefined ? [json.example] : []),
        ...Object.values((json.examples ?? {}) as Json).map((e: Json) => e.value),
      ];
      if (required) t.ok(examples.length > 0, `${where} has an example`);
      examples.forEach((example, i) => check(json.schema, example, `${where} example ${i}`));
      walk(json.schema, where);
    };
    for (const { path, method, operation } of operationsOf(document)) {
      const name = `${method.toUpperCase()} ${path}`;
      media(operation.requestBody?.content, `${name} body`, true);
      for (const [status, answer] of Object.entries(operation.responses as Json)) {
        media(answer.content, `${name} ${status}`, true);
      }
      for (const parameter of (operation.parameters ?? []) as Json[])
        walk(parameter.schema, `${name} ${parameter.name}`);
    }
    t.ok(checked > 100, `${checked} examples checked`);
  });

  t.test("the service's real refusals are among those documented for their route", async (t) => {
    const product = await createProduct(app, { stock: 1 });
    const cases = [
      { method: 'GET', url: '/api/holds/%zz' },
      { method: 'GET', url: `/api/holds/${'a'.repeat(120)}` },
      { method: 'GET', url: '/api/holds/7-Qm3xv0aZ_k9T' },
      { method: 'DELETE', url: '/api/holds/7-Qm3xv0aZ_k9T', headers: { 'content-type': 'text/plain' }, payload: 'x' },
      { method: 'GET', url: '/api/products/99999' },
      { method: 'GET', url: '/api/products/0x10' },
      { method: 'POST', url: '/api/products', payload: {} },
      { method: 'PUT', url: `/api/products/${product.id}/stock`, headers: admin, payload: { stock: -1 } },
      { method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty: 2 } },
      { method: 'POST', url: '/api/holds', payload: { product_id: 99999, qty: 1 } },
      { method: 'POST', url: '/api/orders', payload: { hold_id: '7-Qm3xv0aZ_k9T' } },
      { method: 'GET', url: '/api/orders/42' },
      { method: 'POST', url: '/api/webhooks/payment', payload: {} },
    ] as const;
    for (const request of cases) {
      const answer = await app.inject(request as never);
      const { code } = answer.json() as { code: string };
      const route = documentPath(new URL(request.url, 'http://x').pathname.replace(/\/[^/]+(\/stock)?$/, '/{id}$1'));
      const operation =
        document.paths[request.url.split('?')[0]!]?.[request.method.toLowerCase()] ??
        document.paths[route]?.[request.method.toLowerCase()];
      const listed = codesOf(operation?.responses[answer.statusCode]?.content['application/json'].schema);
      t.ok(listed.includes(code), `${request.method} ${request.url.slice(0, 40)}: ${answer.statusCode} ${code}`);
      t.ok(answer.headers['x-request-id'], 'with a request id');
    }
  });

  t.test('the docs UI is served by the service itself, under a same-origin CSP', async (t) => {
    const page = await app.inject({ url: '/docs/' });
    t.equal(page.statusCode, 200);
    t.match(page.headers['content-type'], /^text\/html/);
    const csp = String(page.headers['content-security-policy']);
    t.match(csp, /default-src 'self'/);
    t.notMatch(csp, /upgrade-insecure-requests/, 'the page loads over plain HTTP too');
    const assets = [...page.body.matchAll(/(?:src|href)="\.\/([^"]+)"/g)].map((m) => m[1]!);
    t.ok(assets.includes('static/swagger-ui-bundle.js') && assets.includes('static/swagger-initializer.js'));
    t.notMatch(page.body, /https?:\/\//, 'nothing is fetched from elsewhere');
    for (const asset of assets) {
      const file = await app.inject({ url: `/docs/${asset}` });
      t.equal(file.statusCode, 200, asset);
      // nosniff: a script or style sheet is run only under its own type.
      t.equal(file.headers['x-content-type-options'], 'nosniff');
      if (asset.endsWith('.js')) t.match(file.headers['content-type'], /^application\/javascript/, asset);
      if (asset.endsWith('.css')) t.match(file.headers['content-type'], /^text\/css/, asset);
    }
    const initializer = await app.inject({ url: '/docs/static/swagger-initializer.js' });
    t.match(initializer.body, /resolveUrl\('\.\/json'\)/, 'the UI reads the document from /docs/json');
    t.same((await app.inject({ url: '/docs/json' })).json(), document, '/docs/json is /openapi.json');
  });
});
