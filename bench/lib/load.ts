import autocannon from 'autocannon';
import { sampleResources, type MachineUsage, type ProcessUsage } from './proc-stats.js';

export const JSON_HEADERS: Record<string, string> = { 'content-type': 'application/json' };

export interface LoadSpec {
  title: string;
  url: string;
  connections: number;
  /** Seconds of load; ignored when `amount` is set. */
  duration?: number;
  /** Stop after this many responses instead of after `duration`. */
  amount?: number;
  /** Requests per second over all connections (autocannon overallRate); unset: as fast as answers come. */
  overallRate?: number;
  requests: autocannon.Request[];
  /** Status codes this load expects; any other answer is counted as unexpected. */
  expected: readonly number[];
  /** The server process to sample for CPU and RSS, when known. */
  pid?: number;
  /** Called on each response with the time since the load started (ms); return true to stop the load there. */
  onResponse?: (status: number, latencyMs: number, sinceStartMs: number) => boolean | void;
}

export interface LatencySummary {
  p50: number;
  p99: number;
  p99_9: number;
  max: number;
  mean: number;
}

export interface LoadSummary {
  title: string;
  connections: number;
  /** Wall time of the load, seconds. */
  seconds: number;
  /** Responses received, of any status. */
  responses: number;
  requestsPerSecond: number;
  /** Over every response, whatever its status (ms). */
  latencyMs: LatencySummary;
  /** Responses per HTTP status code. */
  statusCodes: Record<string, number>;
  /** Responses with a status the load did not expect. */
  unexpected: number;
  /** Connection errors, timeouts included (no response at all). */
  errors: number;
  timeouts: number;
  /** The server process's CPU and memory during the load. */
  usage: ProcessUsage | undefined;
  /** The whole machine's CPU during the load, the stores' and the bench's own (autocannon runs in it). */
  machine: MachineUsage;
}

/** Runs one autocannon load with a progress bar (on a terminal) and sums it up. */
export async function runLoad(spec: LoadSpec): Promise<LoadSummary> {
  const sampler = sampleResources(spec.pid);
  const startedAt = performance.now();
  let stopRequested = false;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: spec.url,
        title: spec.title,
        connections: spec.connections,
        duration: spec.duration ?? 10,
        amount: spec.amount,
        overallRate: spec.overallRate,
        requests: spec.requests,
        timeout: 10,
      },
      (err: unknown, done) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(done)),
    );
    const onResponse = spec.onResponse;
    if (onResponse) {
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        if (onResponse(statusCode, responseTime, performance.now() - startedAt) && !stopRequested) {
          stopRequested = true;
          instance.stop();
        }
      });
    }
    autocannon.track(instance, { renderResultsTable: false, renderLatencyTable: false });
  });
  const { server: usage, machine } = sampler.stop();

  const statusCodes: Record<string, number> = {};
  for (const [code, stats] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = stats.count ?? 0;
  const responses = Object.values(statusCodes).reduce((a, b) => a + b, 0);
  const unexpected = Object.entries(statusCodes)
    .filter(([code]) => !spec.expected.includes(Number(code)))
    .reduce((sum, [, count]) => sum + count, 0);
  const seconds = result.duration > 0 ? result.duration : (performance.now() - startedAt) / 1000;
  return {
    title: spec.title,
    connections: spec.connections,
    seconds,
    responses,
    requestsPerSecond: responses / seconds,
    latencyMs: {
      p50: result.latency.p50,
      p99: result.latency.p99,
      p99_9: result.latency.p99_9,
      max: result.latency.max,
      mean: result.latency.mean,
    },
    statusCodes,
    unexpected,
    errors: result.errors,
    timeouts: result.timeouts,
    usage,
    machine,
  };
}

/** CPU of everything but the server, the stores and the bench during a load (% of one core): noise. */
export function otherCpuPercent(load: LoadSummary): number | undefined {
  if (!load.usage) return undefined;
  const { busyPercent, benchPercent, storesPercent } = load.machine;
  return Math.max(0, busyPercent - load.usage.cpuPercent - benchPercent - storesPercent);
}

/** `201×95,012 409×3`: the answers of a load by status code. */
export function formatStatusCodes(codes: Record<string, number>): string {
  const parts = Object.entries(codes).sort(([a], [b]) => Number(a) - Number(b));
  return parts.length === 0 ? '—' : parts.map(([code, count]) => `${code}×${count.toLocaleString('en-US')}`).join(' ');
}

/** One line after a load, so the run is readable without a terminal progress bar. */
export function describeLoad(load: LoadSummary): string {
  const other = otherCpuPercent(load);
  const cpu =
    (load.usage
      ? `; server CPU ${load.usage.cpuPercent.toFixed(0)}%, RSS ${load.usage.peakRssMb.toFixed(0)} MiB`
      : '') +
    `; stores CPU ${load.machine.storesPercent.toFixed(0)}%, bench CPU ${load.machine.benchPercent.toFixed(0)}%` +
    (other === undefined ? '' : `, other processes ${other.toFixed(0)}%`);
  return (
    `${Math.round(load.requestsPerSecond).toLocaleString('en-US')} req/s, p50 ${load.latencyMs.p50} ms, ` +
    `p99 ${load.latencyMs.p99} ms, p99.9 ${load.latencyMs.p99_9} ms; ${formatStatusCodes(load.statusCodes)}` +
    `${load.errors ? `; ${load.errors} errors (${load.timeouts} timeouts)` : ''}${cpu}`
  );
}
