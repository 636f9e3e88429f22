import t from 'tap';
import { createSoldOutCache } from '../src/domain/sold-out-cache.js';
import { manualClock } from './support/clock.js';

// The cache's rules on a clock the test moves: no test here waits for time to pass.
const TTL_MS = 50;
const PRODUCT = 7;

/** A cache of `ttlMs` on a clock that moves only when the test says. */
function cacheOnManualClock(ttlMs = TTL_MS) {
  const clock = manualClock();
  return { clock, cache: createSoldOutCache(ttlMs, { now: clock.now }) };
}

/** A cache that saw PRODUCT sold out one cache time ago, and whether it refused the request after (the probe). */
function cacheTimeUp() {
  const { clock, cache } = cacheOnManualClock();
  cache.markSoldOut(PRODUCT);
  clock.advance(TTL_MS);
  return { clock, cache, probeRefused: cache.refuses(PRODUCT) };
}

t.test('a product seen sold out is refused for the cache time, and only then', async (t) => {
  const { clock, cache } = cacheOnManualClock();
  t.notOk(cache.refuses(PRODUCT), 'a product never seen sold out is not refused');
  cache.markSoldOut(PRODUCT);
  t.ok(cache.refuses(PRODUCT), 'refused once seen sold out');
  clock.advance(TTL_MS - 1);
  t.ok(cache.refuses(PRODUCT), 'still refused a millisecond before the time is up');
  t.notOk(cache.refuses(PRODUCT + 1), 'another product is not refused');
});

t.test(
  'when the time is up, one request probes Redis while the others are refused; the probe renews the entry',
  async (t) => {
    const { clock, cache, probeRefused } = cacheTimeUp();
    t.notOk(probeRefused, 'the first request after the cache time goes to Redis');
    t.ok(
      Array.from({ length: 20 }, () => cache.refuses(PRODUCT)).every(Boolean),
      'the others meanwhile are refused at once',
    );
    clock.advance(TTL_MS - 1);
    t.ok(cache.refuses(PRODUCT), 'for at most the cache time again');
    cache.markSoldOut(PRODUCT);
    clock.advance(TTL_MS - 1);
    t.ok(cache.refuses(PRODUCT), "the probe's answer (sold out) renewed the entry");
  },
);

t.test('a probe that never answers: after twice the cache time nothing is refused any more', async (t) => {
  const { clock, cache, probeRefused } = cacheTimeUp();
  t.notOk(probeRefused, 'the probe goes to Redis');
  clock.advance(TTL_MS);
  t.notOk(cache.refuses(PRODUCT), 'twice the cache time after the product was seen sold out, requests go to Redis');
  t.notOk(cache.refuses(PRODUCT), 'all of them: the entry is gone');
});

t.test(
  'units that come back through this instance clear the entry at once; a cache time of 0 refuses nothing',
  async (t) => {
    const { cache } = cacheOnManualClock();
    cache.markSoldOut(PRODUCT);
    cache.forget(PRODUCT);
    t.notOk(cache.refuses(PRODUCT), 'forgotten: not refused');
    const off = cacheOnManualClock(0).cache;
    off.markSoldOut(PRODUCT);
    t.notOk(off.refuses(PRODUCT), 'SOLD_OUT_CACHE_MS=0: never refused');
  },
);
