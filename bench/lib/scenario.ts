import type autocannon from 'autocannon';
import type { BenchEnvironment, Deployment } from './environment.js';
import type { InvariantReport } from './invariants.js';
import { JSON_HEADERS, type LoadSummary } from './load.js';
import type { ScenarioName, Settings } from './settings.js';

export interface ScenarioContext {
  settings: Settings;
  /** The service under test. */
  deployment: Deployment;
  /** Present when the bench started the service itself, so a scenario may start a deployment of its own. */
  environment: BenchEnvironment | undefined;
  log(line: string): void;
}

/** Figures a scenario measures beyond its load's requests/s and latencies. */
export interface Figures {
  /** hot-sku: Redis INFO used_memory growth per hold created (bytes). */
  bytesPerHold?: number;
  /** hot-sku: MEMORY USAGE of the product's keys per hold record in them (bytes). */
  bytesPerHoldKeys?: number;
  /** hot-sku: holds active when the memory was measured. */
  activeHolds?: number;
  /** sellout: seconds from the first request to the last unit granted. */
  soldOutSeconds?: number;
  /** sellout, checkout, expiry-storm: units granted by 201s. */
  unitsGranted?: number;
  /** catalogue: products created through the admin API per second. */
  productsCreatedPerSecond?: number;
  /** checkout: complete checkouts (hold, order, paid webhook) per second. */
  checkoutsPerSecond?: number;
  /** expiry-storm: holds expired at once. */
  stormHolds?: number;
  /** expiry-storm: seconds from the sweeper's first release until no storm hold was held. */
  releaseSeconds?: number;
  /** expiry-storm: stormHolds / releaseSeconds. */
  releasedPerSecond?: number;
  /** expiry-storm: hold p99 (ms) of the hot-sku requests answered while the sweep ran, and after it. */
  sweepHoldP99?: number;
  afterSweepHoldP99?: number;
  /** soak: its rates, memory trends and answers. */
  soak?: SoakFigures;
}

/** How a memory figure moved over a soak: medians of its first and last windows after the warm-up. */
export interface MemoryTrend {
  firstMedianMb: number;
  lastMedianMb: number;
  /** (last − first) ÷ first, in %. */
  growthPercent: number;
  firstSamples: number;
  lastSamples: number;
}

export interface SoakFigures {
  /** Requests/s of the mix at full load (the probe), the fixed rate asked for (half of it), the rate achieved. */
  probeRate: number;
  targetRate: number;
  achievedRate: number;
  /** VmRSS of the service process (/proc) and V8 heap used (its memory log); undefined when not measurable. */
  rss: MemoryTrend | undefined;
  heapUsed: MemoryTrend | undefined;
  /** Every sample: [seconds since the soak began, MiB]. */
  series: { rss: [number, number][]; heapUsed: [number, number][] };
  /** Answers per kind of request and status over the warm-up, the probe and the soak. */
  answers: Record<string, Record<string, number>>;
}

export interface ScenarioResult {
  name: ScenarioName;
  /** The measured load: its figures fill the scenario's table row. */
  load: LoadSummary;
  figures: Figures;
  notes: string[];
  invariants: InvariantReport;
}

export interface Scenario {
  name: ScenarioName;
  /** One line: what the scenario does. */
  summary: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
}

/** The largest stock the API accepts: "huge" for a product that must never run out during a run. */
export const HUGE_STOCK = 1_000_000_000;

/** A hold of `qty` units of one product, as autocannon sends it. */
export function holdRequest(productId: number, qty = 1): autocannon.Request {
  return {
    method: 'POST',
    path: '/api/holds',
    headers: { ...JSON_HEADERS },
    body: JSON.stringify({ product_id: productId, qty }),
  };
}

/** Number of responses with this status in a load. */
export function countOf(load: LoadSummary, status: number): number {
  return load.statusCodes[String(status)] ?? 0;
}
