/**
 * How many rows of a table were written together: rows inserted by one statement in autocommit share the
 * transaction id that wrote them (`xmin`), so grouping by it counts the rows per commit. Only for tables whose
 * rows are never updated afterwards (an update gives the row the updater's xmin).
 */
import type { Stores } from './environment.js';

export interface GroupCommits {
  rows: number;
  /** Rows whose commit wrote others too. */
  inBatches: number;
  commits: number;
  largest: number;
}

/** The tables the checkout writes once per step and never updates: a claim per order, a key per webhook. */
export type WrittenOnce = 'hold_claims' | 'processed_webhooks';

export async function groupCommits(stores: Stores, table: WrittenOnce): Promise<GroupCommits> {
  const { rows } = await stores.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} GROUP BY xmin::text`);
  const sizes = rows.map((r) => r.n);
  return {
    rows: sizes.reduce((a, b) => a + b, 0),
    inBatches: sizes.filter((n) => n > 1).reduce((a, b) => a + b, 0),
    commits: sizes.length,
    largest: Math.max(0, ...sizes),
  };
}

/** One line for a report: "8,418 of 8,485 orders written alone; ...". */
export function describeGroupCommits(what: string, g: GroupCommits): string {
  const n = (x: number) => x.toLocaleString('en-US');
  return `${what}: ${n(g.inBatches)} of ${n(g.rows)} written in batches of more than one (${n(g.commits)} commits, largest ${n(g.largest)})`;
}
