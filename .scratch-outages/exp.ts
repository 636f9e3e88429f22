import net from 'node:net';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { admin, buildTestApp, createProduct, createTestDatabase } from '../test/helper.js';

// A proxy whose established connections can be frozen (bytes stop flowing both ways, sockets stay open).
function stallProxy(targetPort: number) {
  const sockets = new Set<net.Socket>();
  let stalled = false;
  const server = net.createServer((c) => {
    const u = net.connect(targetPort, '127.0.0.1');
    for (const s of [c, u]) { sockets.add(s); s.on('error', () => {}); s.on('close', () => sockets.delete(s)); }
    c.on('data', (d) => { if (!stalled) u.write(d); });
    u.on('data', (d) => { if (!stalled) c.write(d); });
    c.on('close', () => u.destroy()); u.on('close', () => c.destroy());
  });
  return new Promise<{ port: number; stall(v: boolean): void; close(): void }>((res) => server.listen(0, '127.0.0.1', () => {
    const a = server.address() as net.AddressInfo;
    res({ port: a.port, stall: (v) => { stalled = v; }, close: () => { for (const s of sockets) s.destroy(); server.close(); } });
  }));
}

const time = async <T>(f: () => Promise<T>) => { const s = performance.now(); const r = await f(); return [r, Math.round(performance.now() - s)] as const; };

t.test('pg stall of established pooled connections', async (t) => {
  const url = new URL(await createTestDatabase(t));
  const proxy = await stallProxy(Number(url.port || 5432));
  t.teardown(() => proxy.close());
  url.port = String(proxy.port);
  const { app } = await buildTestApp(t, { DATABASE_URL: url.toString(), DATABASE_TIMEOUT_MS: 500 });
  await createProduct(app, { stock: 5 });
  // warm a few pool connections
  await Promise.all([1,2,3].map(() => app.inject({ method: 'GET', url: '/api/products' })));
  proxy.stall(true);
  for (let i = 0; i < 4; i++) {
    const [r, ms] = await time(() => app.inject({ method: 'GET', url: '/api/products' }));
    console.log('stalled', r.statusCode, ms, r.body.slice(0, 80));
  }
  proxy.stall(false);
  for (let i = 0; i < 8; i++) {
    const [r, ms] = await time(() => app.inject({ method: 'GET', url: '/api/products' }));
    console.log('restored', r.statusCode, ms, r.body.slice(0, 80));
  }
  const [r, ms] = await time(() => app.inject({ method: 'POST', url: '/api/products', headers: admin, payload: { name: 'x', price_cents: 1, stock: 1 } }));
  console.log('create after', r.statusCode, ms, r.body.slice(0, 120));
});

t.test('redis frozen (SIGSTOP)', async (t) => {
  const port = 16399;
  const child = spawn('/usr/bin/redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  t.teardown(() => { child.kill('SIGKILL'); });
  await sleep(300);
  const { app } = await buildTestApp(t, { REDIS_URL: `redis://127.0.0.1:${port}` });
  const p = await createProduct(app, { stock: 5 });
  child.kill('SIGSTOP');
  for (let i = 0; i < 3; i++) {
    const [r, ms] = await time(() => app.inject({ method: 'POST', url: '/api/holds', payload: { product_id: p.id, qty: 1 } }));
    console.log('frozen hold', r.statusCode, ms, r.body.slice(0, 80));
  }
  const [rz, msz] = await time(() => app.inject({ method: 'GET', url: '/readyz' }));
  console.log('frozen readyz', rz.statusCode, msz, rz.body);
  child.kill('SIGCONT');
  await sleep(200);
  const [r, ms] = await time(() => app.inject({ method: 'GET', url: `/api/products/${p.id}` }));
  console.log('after SIGCONT product', r.statusCode, ms, r.body);
});
