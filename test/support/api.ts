import type { Hold } from '../../src/schemas/hold.js';
import type { Product } from '../../src/schemas/product.js';
import { admin, PRODUCT_DEFAULTS, type ProductFields } from './app.js';
import { request } from './http.js';

/** A product's figures as GET /api/products/:id answers them. */
export type ProductState = Pick<Product, 'stock' | 'available_stock' | 'held' | 'sold'>;

/** A granted hold as POST /api/holds answers it. */
export type GrantedHold = Hold;

/** Reads a product's stock figures over HTTP. */
export async function productState(baseUrl: string, id: number): Promise<ProductState> {
  return (await request<ProductState>(baseUrl, 'GET', `/api/products/${id}`)).body;
}

/** Creates a product through the admin API over HTTP and returns its id. */
export async function createProductAt(baseUrl: string, product: ProductFields): Promise<number> {
  const answer = await request<{ id: number }>(
    baseUrl,
    'POST',
    '/api/products',
    { ...PRODUCT_DEFAULTS, ...product },
    admin,
  );
  if (answer.status !== 201)
    throw new Error(`product creation answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body.id;
}

/** Places a hold over HTTP; anything but 201 fails the test's setup. */
export async function placeHold(
  baseUrl: string,
  body: { product_id: number; qty: number; customer_id?: string },
): Promise<GrantedHold> {
  const answer = await request<GrantedHold>(baseUrl, 'POST', '/api/holds', body);
  if (answer.status !== 201) throw new Error(`hold answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body;
}
