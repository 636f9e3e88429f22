import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { isStoreUnavailable } from '../errors.js';
import type { Database } from './schema.js';

// int8 (bigint ids, cents, counts) as JavaScript numbers: every value this service stores fits in 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

export interface DatabaseOptions {
  url: string;
  timeoutMs: number;
  poolSize?: number;
}

/**
 * A client that ends its connection when a query times out or the connection fails. pg leaves a timed-out query
 * running on its socket: a client handed back to the pool would make every later query wait behind it (or run
 * inside its unfinished transaction). Ending it makes the pool drop it and open a fresh one.
 */
class DisposableClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    // pg emits 'error' on a checked-out client whose connection drops, besides failing its query; the pool
    // listens only while the client is idle, and an unheard 'error' would end the process.
    this.on('error', () => {});
    const query = this.query.bind(this) as (...args: unknown[]) => unknown;
    Object.assign(this, {
      query: (...args: unknown[]) => {
        const result = query(...args);
        if (!(result instanceof Promise)) return result;
        return result.catch((err: unknown) => {
          if (isStoreUnavailable(err)) this.end().catch(() => {});
          throw err;
        });
      },
    });
  }
}

/** A Kysely handle whose connects and queries give up after `timeoutMs`, so an outage answers 503, not a hang. */
export function createDatabase(options: DatabaseOptions): Kysely<Database> {
  const pool = new pg.Pool({
    Client: DisposableClient,
    connectionString: options.url,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.timeoutMs,
    query_timeout: options.timeoutMs,
    statement_timeout: options.timeoutMs,
    idle_in_transaction_session_timeout: options.timeoutMs * 5,
    keepAlive: true,
  });
  // A dropped idle connection is reported here; the pool replaces it on the next checkout.
  pool.on('error', () => {});
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}
