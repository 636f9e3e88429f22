import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ADMIN, ANY_ROUTE, BODY, errorResponses, PATH_PARAMS } from '../schemas/error.js';
import { ADMIN_ONLY } from '../schemas/docs.js';
import { readUrlIntegers } from '../schemas/integer-text.js';
import {
  NewProductSchema,
  PRODUCT_PAGE_DEFAULT,
  ProductListQuerySchema,
  ProductListSchema,
  ProductParamsSchema,
  ProductSchema,
  StockChangeSchema,
} from '../schemas/product.js';

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/products',
    {
      onRequest: app.verifyAdmin,
      schema: {
        summary: 'Create a product (admin)',
        tags: ['products'],
        security: ADMIN_ONLY,
        body: NewProductSchema,
        response: { 201: ProductSchema, ...errorResponses(...ANY_ROUTE, ...ADMIN, ...BODY) },
      },
    },
    async (request, reply) => reply.code(201).send(await app.catalogue.create(request.body, request.log)),
  );

  app.get(
    '/products',
    {
      preValidation: readUrlIntegers,
      schema: {
        summary: 'List products in id order',
        tags: ['products'],
        querystring: ProductListQuerySchema,
        response: { 200: ProductListSchema, ...errorResponses(...ANY_ROUTE, 'VALIDATION_ERROR') },
      },
    },
    async (request) =>
      app.catalogue.list({ limit: request.query.limit ?? PRODUCT_PAGE_DEFAULT, afterId: request.query.after_id ?? 0 }),
  );

  app.get(
    '/products/:id',
    {
      preValidation: readUrlIntegers,
      schema: {
        summary: 'One product with its live stock figures',
        tags: ['products'],
        params: ProductParamsSchema,
        response: { 200: ProductSchema, ...errorResponses(...ANY_ROUTE, ...PATH_PARAMS, 'PRODUCT_NOT_FOUND') },
      },
    },
    async (request) => app.catalogue.get(request.params.id),
  );

  app.put(
    '/products/:id/stock',
    {
      preValidation: readUrlIntegers,
      onRequest: app.verifyAdmin,
      schema: {
        summary: 'Set the total stock (admin); refused below the units held or sold',
        tags: ['products'],
        security: ADMIN_ONLY,
        params: ProductParamsSchema,
        body: StockChangeSchema,
        response: {
          200: ProductSchema,
          ...errorResponses(
            ...ANY_ROUTE,
            ...ADMIN,
            ...PATH_PARAMS,
            ...BODY,
            'PRODUCT_NOT_FOUND',
            'STOCK_BELOW_COMMITTED',
          ),
        },
      },
    },
    async (request) => app.catalogue.setStock(request.params.id, request.body.stock, request.log),
  );
};

export default routes;
