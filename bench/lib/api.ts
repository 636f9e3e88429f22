/** The few API calls the bench makes outside autocannon: creating products, reading their live figures. */

export interface ProductFigures {
  id: number;
  stock: number;
  held: number;
  sold: number;
  available_stock: number;
}

export interface NewProduct {
  name: string;
  stock: number;
  price_cents?: number;
  buckets?: number;
}

async function send<T>(url: string, init: RequestInit & { expect: number }): Promise<T> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const text = await response.text();
  if (response.status !== init.expect) {
    throw new Error(
      `${init.method ?? 'GET'} ${url} answered ${response.status} (expected ${init.expect}): ${text.slice(0, 300)}`,
    );
  }
  return JSON.parse(text) as T;
}

/** Creates a product through the admin API (the service's, or the seed reference's) and returns its id. */
export async function createProduct(baseUrl: string, adminToken: string, product: NewProduct): Promise<number> {
  const created = await send<{ id: number }>(`${baseUrl}/api/products`, {
    method: 'POST',
    expect: 201,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
    body: JSON.stringify({ price_cents: 1_000, ...product }),
  });
  return created.id;
}

export async function getProduct(baseUrl: string, id: number): Promise<ProductFigures> {
  return send<ProductFigures>(`${baseUrl}/api/products/${id}`, { expect: 200 });
}

/** Runs `task` over `items` with at most `concurrency` in flight; answers in input order. */
export async function mapConcurrently<T, R>(
  items: readonly T[],
  concurrency: number,
  task: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await task(items[i]!, i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}
