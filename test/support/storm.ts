/**
 * A mixed storm of real HTTP clients for fault tests: buyers place holds (some under an Idempotency-Key, retried
 * after a 503 or a lost answer), release some, convert others into orders, and pay them with signed webhooks
 * (success or failure, sometimes delivered twice). Every exchange is recorded with its timing, and every grant is
 * kept, so a test can check afterwards that nothing acknowledged was lost and no unit was granted twice.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { signPayload } from '../../src/domain/signatures.js';
import { describeError, request, sendRaw, type HttpAnswer } from './http.js';

/** What a request of the storm was for. */
export type StormRequest = 'hold' | 'release' | 'order' | 'webhook';

/** One request of the storm and what came back. Times are Date.now() (as the service's log lines have them). */
export interface Exchange {
  kind: StormRequest;
  productId: number;
  startedAt: number;
  endedAt: number;
  /** The HTTP status, or 0 when no answer came (a hang past the client deadline, a reset connection). */
  status: number;
  ms: number;
  retryAfter: string | null;
  code: string | undefined;
  /** Why no answer came. */
  error?: string;
}

/** A hold some answer granted (201). */
export interface Grant {
  holdId: string;
  productId: number;
  qty: number;
  customerId: string;
  idempotencyKey: string | undefined;
  grantedAt: number;
}

/** An order some answer acknowledged (201, or 200 for a repeat). */
export interface AcknowledgedOrder {
  orderId: number;
  holdId: string;
  productId: number;
  qty: number;
}

/** A payment webhook answered 200, and the order status it answered. */
export interface AcknowledgedPayment {
  orderId: number;
  event: 'success' | 'failure';
  status: string;
}

/** A product the storm buys. */
export interface StormProduct {
  id: number;
  stock: number;
  perCustomerLimit?: number;
}

export interface StormOptions {
  baseUrl: string;
  products: StormProduct[];
  /** WEBHOOK_SECRET of the service: webhooks are signed with it. */
  webhookSecret: string;
  /** Concurrent buyers, each a loop of one request at a time. */
  clients: number;
  /** Distinct customer ids the buyers share (few enough that limited products meet their limits). */
  customers: number;
  random: () => number;
  /** Past this an unanswered request counts as a hang. */
  deadlineMs: number;
}

/** A storm running; `stop` ends every buyer after its current step and resolves when all have. */
export interface Storm {
  exchanges: Exchange[];
  /** Every hold granted, by id. */
  grants: Map<string, Grant>;
  /** Every order acknowledged, by id. */
  orders: Map<number, AcknowledgedOrder>;
  payments: AcknowledgedPayment[];
  /** Holds whose release was answered 200. */
  releases: Set<string>;
  /** The hold ids each Idempotency-Key was answered with, in answer order. */
  keyedHolds: Map<string, string[]>;
  /**
   * A hold of `qty` units for `customerId`, converted into an order and left unpaid, sent from outside the buyers'
   * loops and recorded like theirs: the order acknowledged, or undefined.
   */
  buy(productId: number, qty: number, customerId: string): Promise<AcknowledgedOrder | undefined>;
  /** One hold sent from outside the buyers' loops (a test's probe), recorded among the exchanges. */
  probeHold(productId: number): Promise<HttpAnswer<unknown> | undefined>;
  stop(): Promise<void>;
}

// A retrying client's pause after a 503 or a lost answer (shorter than Retry-After: a storm is impatient).
const RETRY_PAUSE_MS = 80;
const HOLD_ATTEMPTS = 4;
const ORDER_ATTEMPTS = 3;
const WEBHOOK_ATTEMPTS = 3;

/** Starts `clients` buyers against the service; they run until `stop`. */
export function startStorm(options: StormOptions): Storm {
  const { baseUrl, random, deadlineMs } = options;
  const run = randomBytes(3).toString('hex');
  const storm: Omit<Storm, 'stop' | 'probeHold' | 'buy'> = {
    exchanges: [],
    grants: new Map(),
    orders: new Map(),
    payments: [],
    releases: new Set(),
    keyedHolds: new Map(),
  };
  let running = true;
  let sequence = 0;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

  /** Sends one request and records the exchange; resolves with the answer, or undefined when none came. */
  async function send<T>(
    kind: StormRequest,
    productId: number,
    call: () => Promise<HttpAnswer<T>>,
  ): Promise<HttpAnswer<T> | undefined> {
    const startedAt = Date.now();
    const started = performance.now();
    try {
      const answer = await call();
      const body = answer.body as { code?: unknown } | null;
      storm.exchanges.push({
        kind,
        productId,
        startedAt,
        endedAt: Date.now(),
        status: answer.status,
        ms: answer.ms,
        retryAfter: answer.headers.get('retry-after'),
        code: typeof body?.code === 'string' ? body.code : undefined,
      });
      return answer;
    } catch (err) {
      storm.exchanges.push({
        kind,
        productId,
        startedAt,
        endedAt: Date.now(),
        status: 0,
        ms: performance.now() - started,
        retryAfter: null,
        code: undefined,
        error: describeError(err as Error),
      });
      return undefined;
    }
  }

  /** Sends until an answer other than 503 comes, at most `attempts` times (a lost answer is retried too). */
  async function withRetries<T>(
    attempts: number,
    once: () => Promise<HttpAnswer<T> | undefined>,
  ): Promise<HttpAnswer<T> | undefined> {
    let answer: HttpAnswer<T> | undefined;
    for (let i = 0; i < attempts && running; i++) {
      answer = await once();
      if (answer && answer.status !== 503) return answer;
      await sleep(RETRY_PAUSE_MS);
    }
    return answer;
  }

  async function placeHold(
    product: Pick<StormProduct, 'id'>,
    customerId = `c${Math.floor(random() * options.customers)}`,
    qty = 1 + Math.floor(random() * 2),
  ): Promise<Grant | undefined> {
    // A third of the buyers send an Idempotency-Key and retry under it; the others try once.
    const key = random() < 0.33 ? `cart-${run}-${sequence++}` : undefined;
    const body = { product_id: product.id, qty, customer_id: customerId };
    const once = () =>
      send('hold', product.id, () =>
        request<{ hold_id?: string }>(
          baseUrl,
          'POST',
          '/api/holds',
          body,
          key ? { 'idempotency-key': key } : {},
          deadlineMs,
        ),
      );
    const answer = key ? await withRetries(HOLD_ATTEMPTS, once) : await once();
    if (answer?.status !== 201 || !answer.body.hold_id) return undefined;
    const grant: Grant = {
      holdId: answer.body.hold_id,
      productId: product.id,
      qty,
      customerId,
      idempotencyKey: key,
      grantedAt: Date.now(),
    };
    if (!storm.grants.has(grant.holdId)) storm.grants.set(grant.holdId, grant);
    if (key) storm.keyedHolds.set(key, [...(storm.keyedHolds.get(key) ?? []), grant.holdId]);
    return grant;
  }

  async function convert(grant: Grant): Promise<AcknowledgedOrder | undefined> {
    // Retrying a conversion is safe: a hold converts into one order at most, and a repeat answers it.
    const answer = await withRetries(ORDER_ATTEMPTS, () =>
      send('order', grant.productId, () =>
        request<{ order_id?: number }>(baseUrl, 'POST', '/api/orders', { hold_id: grant.holdId }, {}, deadlineMs),
      ),
    );
    if ((answer?.status !== 201 && answer?.status !== 200) || !answer.body.order_id) return undefined;
    const order = { orderId: answer.body.order_id, holdId: grant.holdId, productId: grant.productId, qty: grant.qty };
    storm.orders.set(order.orderId, order);
    return order;
  }

  async function pay(order: AcknowledgedOrder): Promise<void> {
    const event = random() < 0.65 ? 'success' : 'failure';
    const raw = JSON.stringify({
      idempotency_key: `pay-${run}-${order.orderId}-${event}`,
      order_id: order.orderId,
      event_type: event,
    });
    const headers = { 'content-type': 'application/json', 'x-signature': signPayload(raw, options.webhookSecret) };
    // Providers deliver twice now and then.
    const deliveries = random() < 0.15 ? 2 : 1;
    for (let i = 0; i < deliveries; i++) {
      const answer = await withRetries(WEBHOOK_ATTEMPTS, () =>
        send('webhook', order.productId, () =>
          sendRaw<{ status?: string }>(baseUrl, 'POST', '/api/webhooks/payment', raw, headers, deadlineMs),
        ),
      );
      if (answer?.status === 200 && answer.body.status)
        storm.payments.push({ orderId: order.orderId, event, status: answer.body.status });
    }
  }

  async function release(grant: Grant): Promise<void> {
    const answer = await send('release', grant.productId, () =>
      request(baseUrl, 'DELETE', `/api/holds/${grant.holdId}`, undefined, {}, deadlineMs),
    );
    if (answer?.status === 200) storm.releases.add(grant.holdId);
  }

  async function buyer(): Promise<void> {
    while (running) {
      const grant = await placeHold(pick(options.products));
      if (grant) {
        const next = random();
        if (next < 0.5) {
          const order = await convert(grant);
          if (order) await pay(order);
        } else if (next < 0.7) {
          await release(grant);
        } // else: left to expire
      }
      await sleep(Math.floor(random() * 15));
    }
  }

  const buyers = Array.from({ length: options.clients }, () => buyer());
  return {
    ...storm,
    async buy(productId, qty, customerId) {
      const grant = await placeHold({ id: productId }, customerId, qty);
      return grant && convert(grant);
    },
    probeHold: (productId) =>
      send('hold', productId, () =>
        request(baseUrl, 'POST', '/api/holds', { product_id: productId, qty: 1, customer_id: 'probe' }, {}, deadlineMs),
      ),
    async stop() {
      running = false;
      await Promise.all(buyers);
    },
  };
}
