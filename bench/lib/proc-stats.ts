/**
 * Where the CPU went during a load, from /proc: the server process (with any children it forked, e.g. cluster
 * workers) and its peak RSS, the stores (the Redis server and every `postgres` process), the bench itself
 * (autocannon runs in it), and everything else on the machine (noise: on a shared machine, other work skews
 * every figure). CPU figures are in % of one core.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcessUsage {
  /** CPU time over wall time, in % of one core (200 = both cores of a 2-core machine). */
  cpuPercent: number;
  /** Highest resident set size seen (summed over the process tree), MiB. */
  peakRssMb: number;
}

export interface MachineUsage {
  /** All processes together. */
  busyPercent: number;
  /** This process: autocannon and the bench. */
  benchPercent: number;
  /** The Redis server (when its pid is known) and every process named `postgres`. */
  storesPercent: number;
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
const SAMPLE_MS = 250;

let redisPid: number | undefined;

/** The Redis server's pid (INFO server's process_id), so its CPU is counted as the stores'. */
export function setRedisPid(pid: number | undefined): void {
  redisPid = pid;
}

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, clock ticks */
  ticks: number;
}

function readProc(pid: number): Proc | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its closing one.
    const close = raw.lastIndexOf(')');
    const fields = raw.slice(close + 2).split(' ');
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return {
      pid,
      ppid: Number(fields[1]),
      comm: raw.slice(raw.indexOf('(') + 1, close),
      ticks: Number(fields[11]) + Number(fields[12]),
    };
  } catch {
    return undefined; // it exited meanwhile
  }
}

/** A process's CPU time so far (user + system, µs); 0 when it is gone. */
export function processCpuMicros(pid: number): number {
  const proc = readProc(pid);
  return proc ? (proc.ticks * 1e6) / CLOCK_TICKS : 0;
}

/** A process's resident set size now (VmRSS of /proc/<pid>/status), KiB; 0 when it is gone. */
export function readRssKb(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

function scan(): Map<number, Proc> {
  const procs = new Map<number, Proc>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const proc = readProc(Number(entry));
    if (proc) procs.set(proc.pid, proc);
  }
  return procs;
}

/** `root` and its descendants. */
function tree(procs: Map<number, Proc>, root: number): number[] {
  const children = new Map<number, number[]>();
  for (const p of procs.values()) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const pids = procs.has(root) ? [root] : [];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i]!) ?? []));
  return pids;
}

/**
 * CPU ticks of a changing set of processes: each one's ticks since it was first seen, so processes that start
 * during the measurement count from their start, and those that exit keep what was seen of them.
 */
class TickCounter {
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  constructor(private readonly baseline: Map<number, Proc>) {}
  observe(procs: Map<number, Proc>, pids: number[]): void {
    for (const pid of pids) {
      const ticks = procs.get(pid)?.ticks;
      if (ticks === undefined) continue;
      if (!this.first.has(pid)) this.first.set(pid, this.baseline.get(pid)?.ticks ?? 0);
      this.last.set(pid, ticks);
    }
  }
  total(): number {
    let sum = 0;
    for (const [pid, ticks] of this.last) sum += ticks - (this.first.get(pid) ?? ticks);
    return sum;
  }
}

/** Busy (non-idle, non-iowait) clock ticks of all CPUs, from the first line of /proc/stat. */
function machineBusyTicks(): number {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    return fields.reduce((a, b) => a + b, 0) - (fields[3] ?? 0) - (fields[4] ?? 0);
  } catch {
    return 0;
  }
}

/** Samples /proc every 250 ms until stopped. `serverPid` undefined: the server is not on this machine or not known. */
export function sampleResources(serverPid: number | undefined): {
  stop(): { server: ProcessUsage | undefined; machine: MachineUsage };
} {
  const baseline = scan();
  const server = new TickCounter(baseline);
  const stores = new TickCounter(baseline);
  const startBusy = machineBusyTicks();
  const startCpu = process.cpuUsage();
  const startedAt = performance.now();
  let peakKb = 0;
  const sample = (procs: Map<number, Proc>) => {
    if (serverPid !== undefined) {
      const pids = tree(procs, serverPid);
      server.observe(procs, pids);
      peakKb = Math.max(
        peakKb,
        pids.reduce((sum, pid) => sum + readRssKb(pid), 0),
      );
    }
    const storePids = [...procs.values()].filter((p) => p.comm === 'postgres').map((p) => p.pid);
    if (redisPid !== undefined) storePids.push(...tree(procs, redisPid));
    stores.observe(procs, storePids);
  };
  sample(baseline);
  const timer = setInterval(() => sample(scan()), SAMPLE_MS);
  return {
    stop: () => {
      clearInterval(timer);
      sample(scan());
      const seconds = (performance.now() - startedAt) / 1000;
      const percent = (ticks: number) => (seconds > 0 ? (100 * ticks) / CLOCK_TICKS / seconds : 0);
      const cpu = process.cpuUsage(startCpu);
      return {
        server: serverPid === undefined ? undefined : { cpuPercent: percent(server.total()), peakRssMb: peakKb / 1024 },
        machine: {
          busyPercent: percent(machineBusyTicks() - startBusy),
          benchPercent: seconds > 0 ? (100 * (cpu.user + cpu.system)) / 1e6 / seconds : 0,
          storesPercent: percent(stores.total()),
        },
      };
    },
  };
}
