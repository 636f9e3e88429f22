import { Redis, ReplyError } from 'ioredis';
import { StoreUnavailableError } from '../errors.js';
import { redisFailure, ReplyMismatchError, ScriptReplyError } from './errors.js';
import { defineScripts, type ScriptTimer } from './scripts.js';

export interface RedisConnectionOptions {
  url: string;
  commandTimeoutMs: number;
  /** Told the time of every script call (the metrics). */
  scriptTimer?: ScriptTimer;
}

/**
 * A Redis connection for a service that must answer fast: a command fails at once while disconnected (no offline
 * queue) or after `commandTimeoutMs`, and is never sent again after a reconnect. A command that reaches Redis
 * after its timeout still runs: the hold script therefore takes a deadline and does nothing past it.
 * Auto-pipelining batches concurrent requests' commands into one write (hold requests have their own batches).
 */
export async function connectRedis(options: RedisConnectionOptions): Promise<Redis> {
  const redis = new Redis(options.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: Math.max(1000, options.commandTimeoutMs),
    enableAutoPipelining: true,
    // Hold requests come batched already (reserve-batches.ts); an auto-pipeline around each batch only cost
    // time: hot-sku served 26% more requests a second without it.
    autoPipeliningIgnoredCommands: ['reserveStock'],
    // Keep trying to reconnect in the background, never more than a second apart.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
  defineScripts(redis, options.scriptTimer);
  // Errors reach the callers of each command; without a listener ioredis would log every reconnect failure. A
  // reply with no command waiting for it means the connection is out of step: drop it.
  redis.on('error', (err: Error) => {
    if (err.message.startsWith('Command queue state error')) resetConnection(redis);
  });
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot connect to Redis at ${redactUrl(options.url)}: ${(err as Error).message}`, { cause: err });
  }
  return redis;
}

/**
 * Drops the socket at once, before it carries another command. ioredis matches replies to commands by their
 * order alone, so after a reply is lost (a timeout, a reply no command was waiting for) every later reply would
 * go to the wrong command. `destroy()` rather than `disconnect(true)`: disconnect ends the socket gracefully, and
 * replies still on their way would be handed out in the meantime. On 'close' ioredis fails every command still
 * waiting on the socket (maxRetriesPerRequest 0: 503s) and reconnects; until then commands fail at once.
 */
export function resetConnection(redis: Redis): void {
  if (!redis.stream?.destroyed) redis.stream?.destroy();
}

/**
 * Sends one command (or pipeline) and settles with its reply as `decode` reads it, or a classified error
 * (src/redis/errors.ts). `decode` throws ScriptReplyError for a reply the command never gives.
 */
export type Exchange = <R, T = R>(send: () => Promise<R>, decode?: (reply: R) => T, timeoutMs?: number) => Promise<T>;

// A script that met a NOSCRIPT did not run, so sending it again is safe. ioredis re-sends it once by itself; under
// flushes back to back that re-send can meet the next flush too.
const NOSCRIPT_ATTEMPTS = 10;

/**
 * The one way the command layer talks to Redis:
 * - the command's time starts when it is issued, not when ioredis writes it (an auto-pipeline waits for the one
 *   before it), so a stalled Redis is a 503 after `commandTimeoutMs`;
 * - a command unanswered by then resets the connection at once (`resetConnection`), so no later command reads
 *   its late reply; a reply of a shape the command never gives does the same;
 * - a NOSCRIPT (the script cache was flushed) is sent again, up to NOSCRIPT_ATTEMPTS times within the deadline.
 */
export function createExchange(redis: Redis, commandTimeoutMs: number): Exchange {
  return <R, T = R>(
    send: () => Promise<R>,
    decode: (reply: R) => T = (reply) => reply as unknown as T,
    timeoutMs = commandTimeoutMs,
  ) =>
    new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (outOfStep(err)) resetConnection(redis);
        reject(redisFailure(err));
      };
      const settle = (err: unknown, reply?: R) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== undefined) return fail(err);
        try {
          resolve(decode(reply as R));
        } catch (decodeErr) {
          fail(decodeErr);
        }
      };
      const timer = setTimeout(() => {
        // Synchronously, before this turn lets any other command be written to the socket.
        resetConnection(redis);
        settle(new StoreUnavailableError('redis', new Error(`no reply within ${timeoutMs} ms`)));
      }, timeoutMs);
      const attempt = (left: number) => {
        let sent: Promise<R>;
        try {
          sent = send();
        } catch (err) {
          return settle(err);
        }
        sent.then(
          (reply) => settle(undefined, reply),
          (err: unknown) => (left > 1 && !settled && isNoScript(err) ? attempt(left - 1) : settle(err)),
        );
      };
      attempt(NOSCRIPT_ATTEMPTS);
    });
}

/** A NOSCRIPT reply: the script cache lacked the script, which therefore did not run. */
export function isNoScript(err: unknown): boolean {
  return err instanceof ReplyError && (err as Error).message.startsWith('NOSCRIPT');
}

/** ioredis's own timeout (a backstop) or a reply that cannot be this command's. */
function outOfStep(err: unknown): boolean {
  return (
    err instanceof ScriptReplyError ||
    err instanceof ReplyMismatchError ||
    (err instanceof Error && err.message === 'Command timed out')
  );
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparseable url>';
  }
}
