import { Redis, ReplyError } from 'ioredis';
const r = new Redis('redis://127.0.0.1:6379', { commandTimeout: 500 });
const e: any = await r.eval('return redis.error_reply("ERR a bug")', 0).catch((x) => x);
console.log(
  e?.constructor?.name,
  e instanceof ReplyError,
  Object.getPrototypeOf(Object.getPrototypeOf(e))?.constructor?.name,
  e.name,
  e.message,
);
const live = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 20, autoResendUnfulfilledCommands: false });
await live.ping();
const p = live.blpop('x:never', 5).catch((x) => x);
live.stream.destroy();
const a: any = await p;
console.log(a?.constructor?.name, a.message);
r.disconnect();
live.disconnect();
