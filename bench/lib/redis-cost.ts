/**
 * What a stretch of work cost a Redis server, from INFO: its CPU (INFO cpu, the whole process: commands,
 * networking, parsing) and its commands (INFO commandstats, reset at the start of the stretch). Commands a script
 * runs are counted in commandstats under their own names as well, and their time is inside the script's: a
 * script's `usec` is its whole run, and the other commands' calls are the operations it made.
 */
import type { Redis } from 'ioredis';

export interface CommandStat {
  calls: number;
  usec: number;
}

export interface RedisSample {
  /** performance.now() when taken (ms). */
  at: number;
  /** used_cpu_user + used_cpu_sys (s). */
  cpuSeconds: number;
  /** Per command name (lower case), since the last CONFIG RESETSTAT. */
  commands: Map<string, CommandStat>;
  /** The inventory's `held` at the same moment, when asked for. */
  held: number | undefined;
}

export interface RedisCost {
  seconds: number;
  /** Redis's CPU over the wall time, % of one core (Redis runs commands on one thread). */
  cpuPercent: number;
  /** Script calls (EVALSHA and EVAL) and their time inside Redis. */
  scriptCalls: number;
  scriptMicros: number;
  /** Commands the scripts ran, plus any sent outside a script (INFO and CONFIG left out). */
  operations: number;
  /** used_cpu_user + sys over the stretch (µs). */
  cpuMicros: number;
  /** The operations by command, most first. */
  byCommand: Record<string, number>;
}

const SCRIPT_COMMANDS = new Set(['evalsha', 'eval', 'evalsha_ro', 'eval_ro']);
// The measurement's own commands.
const IGNORED_COMMANDS = new Set(['info', 'config', 'ping', 'client', 'hello', 'select', 'script', 'multi', 'exec']);

/** cmdstat_<name>:calls=N,usec=N,... lines of INFO commandstats. */
export function parseCommandStats(info: string): Map<string, CommandStat> {
  const stats = new Map<string, CommandStat>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats.set(match[1]!.toLowerCase(), { calls: Number(match[2]), usec: Number(match[3]) });
  }
  return stats;
}

/** used_cpu_user + used_cpu_sys of INFO cpu (s). */
export function parseCpuSeconds(info: string): number {
  const user = /^used_cpu_user:([\d.]+)/m.exec(info);
  const sys = /^used_cpu_sys:([\d.]+)/m.exec(info);
  if (!user || !sys) throw new Error('INFO cpu has no used_cpu_user/used_cpu_sys');
  return Number(user[1]) + Number(sys[1]);
}

/**
 * Resets the command statistics and takes the first sample of a stretch. With `heldOf` (an inventory key), the
 * sample also reads its `held`, in the same MULTI: the units counted and the costs are of the same moment.
 */
export async function startRedisCost(redis: Redis, heldOf?: string): Promise<RedisSample> {
  return sampleRedis(redis, heldOf, true);
}

export async function sampleRedis(redis: Redis, heldOf?: string, reset = false): Promise<RedisSample> {
  const multi = redis.multi();
  if (reset) multi.config('RESETSTAT');
  multi.info('cpu').info('commandstats');
  if (heldOf) multi.hget(heldOf, 'held');
  const replies = (await multi.exec()) ?? [];
  const at = performance.now();
  const [err] = replies.find(([e]) => e) ?? [null];
  if (err) throw err;
  const values = replies.slice(reset ? 1 : 0).map(([, value]) => value);
  return {
    at,
    cpuSeconds: parseCpuSeconds(String(values[0])),
    commands: parseCommandStats(String(values[1])),
    held: heldOf ? Number(values[2] ?? 0) : undefined,
  };
}

/** The cost between a stretch's first sample (startRedisCost) and `end`. */
export function redisCost(start: RedisSample, end: RedisSample): RedisCost {
  const seconds = (end.at - start.at) / 1000;
  const cpuMicros = (end.cpuSeconds - start.cpuSeconds) * 1e6;
  let scriptCalls = 0;
  let scriptMicros = 0;
  let operations = 0;
  const byCommand: Record<string, number> = {};
  const sorted = [...end.commands].sort(([, a], [, b]) => b.calls - a.calls);
  for (const [name, stat] of sorted) {
    const before = start.commands.get(name) ?? { calls: 0, usec: 0 };
    const calls = stat.calls - before.calls;
    if (calls <= 0 || IGNORED_COMMANDS.has(name)) continue;
    if (SCRIPT_COMMANDS.has(name)) {
      scriptCalls += calls;
      scriptMicros += stat.usec - before.usec;
    } else {
      operations += calls;
      byCommand[name] = calls;
    }
  }
  return {
    seconds,
    cpuPercent: seconds > 0 ? (cpuMicros / (seconds * 1e6)) * 100 : 0,
    scriptCalls,
    scriptMicros,
    operations,
    cpuMicros,
    byCommand,
  };
}

/** A cost divided by the units of work it did (holds, checkouts, expired holds). */
export interface UnitCost {
  units: number;
  perSecond: number;
  /** Redis CPU (INFO cpu) per unit, µs. */
  cpuMicros: number;
  /** Script time inside Redis (commandstats usec) per unit, µs: usec_per_call ÷ units per call. */
  scriptMicros: number;
  scriptCalls: number;
  /** Commands run (inside scripts or not) per unit. */
  operations: number;
}

export function perUnit(cost: RedisCost, units: number): UnitCost {
  const per = (value: number) => (units > 0 ? value / units : 0);
  return {
    units,
    perSecond: cost.seconds > 0 ? units / cost.seconds : 0,
    cpuMicros: per(cost.cpuMicros),
    scriptMicros: per(cost.scriptMicros),
    scriptCalls: per(cost.scriptCalls),
    operations: per(cost.operations),
  };
}

/**
 * A cost with what the same Redis does when idle taken off, at `idle`'s rate per second: a service's background
 * loops (the sweeper's schedule, the loss watcher) run whether or not requests come.
 */
export function withoutIdle(cost: RedisCost, idle: RedisCost): RedisCost {
  const share = idle.seconds > 0 ? cost.seconds / idle.seconds : 0;
  const less = (value: number, idleValue: number) => Math.max(0, value - idleValue * share);
  return {
    ...cost,
    scriptCalls: less(cost.scriptCalls, idle.scriptCalls),
    scriptMicros: less(cost.scriptMicros, idle.scriptMicros),
    operations: less(cost.operations, idle.operations),
    cpuMicros: less(cost.cpuMicros, idle.cpuMicros),
  };
}
