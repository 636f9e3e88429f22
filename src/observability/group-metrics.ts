import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue, type Registry } from 'prom-client';
import type { Logger } from '../log.js';

/**
 * GET /metrics of a process group (WEB_CONCURRENCY > 1): the worker that serves the scrape asks the primary, the
 * primary asks every worker that listens for its registry (as JSON) and merges them with prom-client's
 * AggregatorRegistry.aggregate, so one scrape is the whole group: counters and histograms summed, the gauges read
 * from the shared stores (stock, sweeper lag, drift) taken at their max, Node's own by prom-client's rules.
 *
 * Not AggregatorRegistry.clusterMetrics: it asks every forked worker, and one still starting (a restart) has no
 * registry to answer with, so every scrape during a restart would wait out its 5 s timeout and fail.
 */

const SCRAPE = 'flashsale:scrape';
const SCRAPED = 'flashsale:scraped';
const SAMPLE = 'flashsale:sample';
const SAMPLED = 'flashsale:sampled';

// A worker that has not answered by then (blocked, dying) is left out of that scrape rather than failing it.
const SAMPLE_TIMEOUT_MS = 2000;
// Longer than the primary's own wait, so the primary's answer (possibly without a slow worker) comes first.
const SCRAPE_TIMEOUT_MS = SAMPLE_TIMEOUT_MS + 1000;

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

interface Message {
  type: string;
  id: number;
  text?: string;
  error?: string;
  metrics?: MetricJson[][];
}

const isMessage = (value: unknown, type: string): value is Message =>
  typeof value === 'object' && value !== null && (value as Message).type === type;

/**
 * In a worker: answers the primary's requests for this registry, `before` refreshing what is read at a scrape
 * (the live gauges). One registry a worker: the service's app.
 */
export function shareRegistry(registry: Registry, before: () => Promise<void>): void {
  process.on('message', (message: unknown) => {
    if (!isMessage(message, SAMPLE)) return;
    before()
      .then(() => registry.getMetricsAsJSON())
      .then(
        (metrics) => process.send?.({ type: SAMPLED, id: message.id, metrics: [metrics] }),
        (err: Error) => process.send?.({ type: SAMPLED, id: message.id, error: err.message }),
      );
  });
}

let scrapes = 0;
let listening = false;
const waiting = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>();

/** In a worker: the whole group's metrics, in Prometheus text, from the primary. */
export function groupExposition(): Promise<string> {
  if (!listening) process.on('message', onScraped);
  listening = true;
  const id = scrapes++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      reject(new Error(`the primary did not answer the scrape within ${SCRAPE_TIMEOUT_MS} ms`));
    }, SCRAPE_TIMEOUT_MS);
    waiting.set(id, {
      resolve: (text) => (clearTimeout(timer), resolve(text)),
      reject: (err) => (clearTimeout(timer), reject(err)),
    });
    process.send!({ type: SCRAPE, id });
  });
}

function onScraped(message: unknown): void {
  if (!isMessage(message, SCRAPED)) return;
  const pending = waiting.get(message.id);
  if (!pending) return;
  waiting.delete(message.id);
  if (message.error !== undefined) pending.reject(new Error(message.error));
  else pending.resolve(message.text ?? '');
}

/**
 * In the primary: answers each worker's scrape with the group's metrics. `listening` says which workers to ask
 * (those serving: a worker still starting has no registry yet).
 */
export function answerScrapes(listening: () => Worker[], log: Pick<Logger, 'warn'>): void {
  let samples = 0;
  const pendingSamples = new Map<number, (metrics: MetricJson[][] | undefined) => void>();
  cluster.on('message', (worker, message: unknown) => {
    if (isMessage(message, SAMPLED)) {
      pendingSamples.get(message.id)?.(message.metrics);
      return;
    }
    if (!isMessage(message, SCRAPE)) return;
    const asked = listening().filter((w) => w.isConnected());
    const sample = (w: Worker) =>
      new Promise<MetricJson[][] | undefined>((resolve) => {
        const id = samples++;
        const timer = setTimeout(() => {
          pendingSamples.delete(id);
          log.warn({ worker: w.id, timeout_ms: SAMPLE_TIMEOUT_MS }, 'a worker left out of a scrape: no answer');
          resolve(undefined);
        }, SAMPLE_TIMEOUT_MS);
        pendingSamples.set(id, (metrics) => {
          clearTimeout(timer);
          pendingSamples.delete(id);
          resolve(metrics);
        });
        w.send({ type: SAMPLE, id });
      });
    Promise.all(asked.map(sample))
      .then((answers) => AggregatorRegistry.aggregate(answers.flatMap((a) => a ?? [])).metrics())
      .then(
        (text) => worker.isConnected() && worker.send({ type: SCRAPED, id: message.id, text }),
        (err: Error) => worker.isConnected() && worker.send({ type: SCRAPED, id: message.id, error: err.message }),
      );
  });
}
