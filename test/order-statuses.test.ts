import t from 'tap';
import { RETURNED_ORDER_STATUSES, SOLD_ORDER_STATUSES } from '../src/db/schema.js';
import { productKeys, productTag } from '../src/redis/keys.js';
import { OrderStatusSchema } from '../src/schemas/order.js';
import { buildTestApp, createProduct, deleteKeys } from './support/app.js';
import { poll } from './support/wait.js';

t.test('every order status either counts as sold or has its units returned, never both', async (t) => {
  const statuses = OrderStatusSchema.anyOf.map((literal) => literal.const);
  t.same([...SOLD_ORDER_STATUSES, ...RETURNED_ORDER_STATUSES].sort(), [...statuses].sort());
  t.same(
    SOLD_ORDER_STATUSES.filter((s) => (RETURNED_ORDER_STATUSES as readonly string[]).includes(s)),
    [],
  );
});

t.test(
  'a late payment (refund_required) sells nothing: a product reloaded from Postgres counts only paid and pending orders',
  async (t) => {
    const { app, config, redis } = await buildTestApp(t, {
      WEBHOOK_ALLOW_UNSIGNED: true,
      ORDER_PAYMENT_TTL_SECONDS: 1,
      RECOVERY_INTERVAL_MS: 0,
    });
    const product = await createProduct(app, { stock: 5 });
    const order = async (qty: number): Promise<number> => {
      const hold = await app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: product.id, qty } });
      const placed = await app.inject({
        method: 'POST',
        url: '/api/orders',
        payload: { hold_id: hold.json().hold_id },
      });
      t.equal(placed.statusCode, 201);
      return placed.json<{ order_id: number }>().order_id;
    };
    const pay = async (orderId: number, key: string) =>
      (
        await app.inject({
          method: 'POST',
          url: '/api/webhooks/payment',
          payload: { idempotency_key: key, order_id: orderId, event_type: 'success' },
        })
      ).json();
    const state = async () => (await app.inject({ method: 'GET', url: `/api/products/${product.id}` })).json();

    const paid = await order(1);
    t.match(await pay(paid, 'pay-paid'), { status: 'paid' });
    const late = await order(3);
    const cancelled = await poll(
      () => app.orders.settleOverdue(),
      (pass) => pass.cancelled > 0,
      5000,
    );
    t.equal(cancelled.cancelled, 1, 'the unpaid order is cancelled at its deadline');
    await order(1); // left pending
    t.match(await pay(late, 'pay-late'), { status: 'refund_required' }, 'paid after the deadline: refund required');
    t.match(await state(), { stock: 5, held: 0, sold: 2, available_stock: 3 }, 'sold: the paid and the pending order');

    // Redis loses the product (a restart without persistence): its counters are rebuilt from Postgres.
    await deleteKeys(productTag(config.REDIS_KEY_PREFIX, product.id));
    t.equal(
      await redis.exists(productKeys(config.REDIS_KEY_PREFIX, product.id).inventory),
      0,
      'Redis has lost the product',
    );
    t.match(
      await state(),
      { stock: 5, held: 0, sold: 2, available_stock: 3 },
      'rebuilt from Postgres: refund_required is not sold',
    );
  },
);
