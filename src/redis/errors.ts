import { ReplyError } from 'ioredis';
import { StoreUnavailableError } from '../errors.js';

// Redis replies that mean "not now" rather than "wrong request". NOSCRIPT: the script cache was flushed
// between ioredis's EVALSHA and its one re-send (SCRIPT FLUSH, a restart, a failover); the script did not run.
const TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|READONLY|NOSCRIPT|MOVED|ASK)\b/;

/**
 * An error from an ioredis command as the service sees it. Redis's own error replies are answers: a transient one
 * means the store is unavailable, any other is a bug in the command (left as it is, a 500). Every other error
 * ioredis rejects a command with is about the connection (closed, aborted, timed out, not writable, retries
 * used up), so Redis is unavailable, whatever its message says.
 */
export function redisFailure(err: unknown): Error {
  if (err instanceof ReplyMismatchError) return new StoreUnavailableError('redis', err);
  if (err instanceof StoreUnavailableError || err instanceof ScriptReplyError) return err;
  if (err instanceof ReplyError) {
    const reply = err as Error;
    return TRANSIENT_REPLY.test(reply.message) ? new StoreUnavailableError('redis', reply) : reply;
  }
  // Mistakes in our own calls (a wrong argument type) stay bugs.
  if (err instanceof TypeError || err instanceof RangeError) return err;
  return new StoreUnavailableError('redis', err);
}

/** Rethrows an ioredis command's error as `redisFailure` classifies it: `.catch(rethrowRedisFailure)`. */
export function rethrowRedisFailure(err: unknown): never {
  throw redisFailure(err);
}

/** A reply of a shape the script never gives: a bug or a foreign script under our name, never an outage (500). */
export class ScriptReplyError extends Error {
  override readonly name = 'ScriptReplyError';
  constructor(command: string, reply: unknown) {
    super(`${command} answered ${JSON.stringify(reply)?.slice(0, 200)}`);
  }
}

/**
 * A reply that names another command's keys or requests: the connection matched a reply to the wrong command
 * (replies were lost on it). Not a bug in the command: the connection is reset and the caller answered 503.
 */
export class ReplyMismatchError extends Error {
  override readonly name = 'ReplyMismatchError';
  constructor(command: string, reply: unknown) {
    super(`${command} was answered another command's reply ${JSON.stringify(reply)?.slice(0, 200)}`);
  }
}
