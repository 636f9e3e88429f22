import pg from 'pg';
import { StoreUnavailableError } from '../errors.js';

// SQLSTATE classes and codes that mean "not now": 08 connection exception, 57P operator intervention (shutdown,
// crash), 53300 too many connections, 57014 the server's statement_timeout cancelled the query (a lock wait, an
// overloaded server).
const UNAVAILABLE_SQLSTATE = /^(08|57P)|^(53300|57014)$/;

/**
 * An error from the pg driver as the service sees it. Errors Postgres answered with (DatabaseError, with a
 * SQLSTATE) are answers: a connection or shutdown state means unavailable, any other is a bug or a constraint
 * the caller handles. Every other error the driver raises (refused, reset, terminated, connect or query
 * timeout, a client or pool no longer usable) is about the connection.
 */
export function databaseFailure(err: unknown): Error {
  if (err instanceof StoreUnavailableError) return err;
  if (err instanceof pg.DatabaseError) {
    return UNAVAILABLE_SQLSTATE.test(err.code ?? '') ? new StoreUnavailableError('postgres', err) : err;
  }
  if (err instanceof TypeError || err instanceof RangeError) return err;
  if (err instanceof Error) return new StoreUnavailableError('postgres', err);
  return new Error(String(err));
}
