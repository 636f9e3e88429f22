import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ErrorSchema } from '../schemas/error.js';
import { readUrlIntegers } from '../schemas/integer-text.js';
import {
  NewProductSchema,
  PRODUCT_PAGE_DEFAULT,
  ProductListQuerySchema,
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
        body: NewProductSchema,
        response: { 201: ProductSchema, 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request, reply) => reply.code(201).send(await app.catalogue.create(request.body)),
  );

  app.get(
    '/products',
    {
      preValidation: readUrlIntegers,
      schema: {
        summary: 'List products in id order',
        querystring: ProductListQuerySchema,
        response: { 200: Type.Array(ProductSchema), 400: ErrorSchema, 503: ErrorSchema },
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
        params: ProductParamsSchema,
        response: { 200: ProductSchema, 400: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema },
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
        params: ProductParamsSchema,
        body: StockChangeSchema,
        response: {
          200: ProductSchema,
          400: ErrorSchema,
          401: ErrorSchema,
          404: ErrorSchema,
          409: ErrorSchema,
          503: ErrorSchema,
        },
      },
    },
    async (request) => app.catalogue.setStock(request.params.id, request.body.stock),
  );
};

export default routes;
