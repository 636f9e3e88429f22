/** An HTTP answer as the tests read it. */
export interface HttpAnswer<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
  /** Milliseconds from sending the request to having the whole answer. */
  ms: number;
}

/** Past this a request still unanswered fails the test: a hang must not stall the run. */
export const CLIENT_DEADLINE_MS = 30_000;

/** One real HTTP request with a body sent exactly as given (or none); an empty answer body reads as null. */
export async function sendRaw<T = Record<string, unknown>>(
  baseUrl: string,
  method: string,
  path: string,
  rawBody: string | undefined,
  headers: Record<string, string> = {},
  deadlineMs: number = CLIENT_DEADLINE_MS,
): Promise<HttpAnswer<T>> {
  const started = performance.now();
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: rawBody,
    signal: AbortSignal.timeout(deadlineMs),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: (text ? JSON.parse(text) : null) as T,
    headers: response.headers,
    ms: performance.now() - started,
  };
}

/** One real HTTP request with a JSON body (or none); an empty answer body reads as null. */
export function request<T = Record<string, unknown>>(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  deadlineMs: number = CLIENT_DEADLINE_MS,
): Promise<HttpAnswer<T>> {
  if (body === undefined) return sendRaw<T>(baseUrl, method, path, undefined, headers, deadlineMs);
  return sendRaw<T>(
    baseUrl,
    method,
    path,
    JSON.stringify(body),
    { 'content-type': 'application/json', ...headers },
    deadlineMs,
  );
}

/** `request` bound to one base URL and one client deadline. */
export type Client<T> = (
  method: string,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
) => Promise<HttpAnswer<T>>;

/** A timed HTTP client for the service at `baseUrl`. */
export function client<T = Record<string, unknown>>(
  baseUrl: string,
  deadlineMs: number = CLIENT_DEADLINE_MS,
): Client<T> {
  return (method, path, body, headers = {}) => request<T>(baseUrl, method, path, body, headers, deadlineMs);
}

/** What a request that may meet a dying process got: its answer, or the error that took its place. */
export interface Attempt<T> {
  answer?: HttpAnswer<T>;
  error?: Error;
}

/** Sends a request through `call`, catching the failure a dead or unreachable service causes. */
export async function attempt<T>(call: Client<T>, method: string, path: string, body?: unknown): Promise<Attempt<T>> {
  try {
    return { answer: await call(method, path, body) };
  } catch (err) {
    return { error: err as Error };
  }
}

/** An error of `fetch` in one line, with the socket's error code behind it. */
export function describeError(err: Error | undefined): string {
  if (!err) return 'none';
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return `${err.name}: ${err.message}${cause ? ` (${cause.code ?? cause.message})` : ''}`;
}

/** Counts of each value in a list, e.g. of status codes. */
export function tally<T>(values: T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

/** The p-th percentile (nearest rank) of a list of figures, e.g. answer times; 0 for an empty list. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}
