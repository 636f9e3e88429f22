import t from 'tap';
import { sweepScheduleKey } from '../src/redis/keys.js';
import { buildTestApp, createProduct } from './support/app.js';

t.test('an order for a hold that does not exist answers 404 and adds nothing to the sweep schedule', async (t) => {
  const { app, config, redis } = await buildTestApp(t);
  const product = await createProduct(app, { stock: 3 });
  const schedule = sweepScheduleKey(config.REDIS_KEY_PREFIX);
  const before = await redis.zrange(schedule, '0', '-1');
  t.same(before, [String(product.id)], 'a product is on the schedule once created');

  for (const holdId of ['9999999-AAAAAAAAAAAA', `${product.id}-AAAAAAAAAAAA`, '2147483647-AAAAAAAAAAAA']) {
    const answer = await app.inject({ method: 'POST', url: '/api/orders', payload: { hold_id: holdId } });
    t.equal(answer.statusCode, 404, `${holdId}: 404`);
    t.equal(answer.json().code, 'HOLD_NOT_FOUND');
  }
  t.same(await redis.zrange(schedule, '0', '-1'), before, 'the schedule holds the real product only');
});
