import { Kind, KindGuard, Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parseIntegerText } from './schemas/integer-text.js';

// The longest delay a Node.js timer keeps: a longer one fires after 1 ms instead (with a TimeoutOverflowWarning).
const TIMER_MAX_MS = 2_147_483_647;
// Durations in seconds: at most a year, which keeps every figure in milliseconds derived from them exact.
const MAX_SECONDS = 365 * 86_400;

const Seconds = (defaultValue: number, description: string) =>
  Type.Integer({ minimum: 1, maximum: MAX_SECONDS, default: defaultValue, description });
/** A duration in milliseconds; with `minimum: 0`, 0 turns the feature off. */
const Milliseconds = (minimum: 0 | 1, defaultValue: number, description: string) =>
  Type.Integer({ minimum, maximum: TIMER_MAX_MS, default: defaultValue, description });
// A browser origin: scheme, host and optional port, no path (what an Origin header carries).
const ORIGIN = 'https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?';
const PositiveInt = (defaultValue: number, description: string) =>
  Type.Integer({ minimum: 1, default: defaultValue, description });

/** The service's whole configuration, read from the environment: one schema, one type. */
export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000, description: 'HTTP port' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'HTTP listen address' }),
  REDIS_URL: Type.String({
    default: 'redis://127.0.0.1:6379',
    pattern: '^rediss?://',
    description: 'Redis connection URL',
  }),
  REDIS_CLUSTER_NODES: Type.String({
    default: '',
    pattern: '^([A-Za-z0-9.-]+:[0-9]{1,5}(, *[A-Za-z0-9.-]+:[0-9]{1,5})*)?$',
    description: 'host:port of some Redis Cluster nodes, comma-separated: a Redis Cluster instead of REDIS_URL',
  }),
  DATABASE_URL: Type.String({
    default: 'postgres://postgres@127.0.0.1:5432/flashsale',
    pattern: '^postgres(ql)?://',
    description: 'PostgreSQL connection URL (the database is created when missing)',
  }),
  REDIS_KEY_PREFIX: Type.String({
    default: 'fs:',
    pattern: '^[A-Za-z0-9_:.-]*$',
    description: 'prefix of every Redis key, so several deployments or test runs can share one Redis',
  }),
  HOLD_TTL_SECONDS: Seconds(120, 'how long a hold reserves its units'),
  HOLD_RETAIN_SECONDS: Seconds(86_400, 'how long an ended hold stays readable'),
  // At most 10000: the hold desk makes one sold-out refusal per quantity at start, and qty × price_cents (at most
  // 10^10) must stay an exact integer.
  MAX_QTY_PER_HOLD: Type.Integer({ minimum: 1, maximum: 10_000, default: 10, description: 'most units in one hold' }),
  IDEMPOTENCY_TTL_SECONDS: Seconds(86_400, 'how long an Idempotency-Key is remembered'),
  SOLD_OUT_CACHE_MS: Milliseconds(
    0,
    20,
    'an instance refuses holds on a product it saw sold out for this long without asking Redis, then while one request asks (at most as long again; 0: off)',
  ),
  SWEEP_INTERVAL_MS: Milliseconds(0, 250, 'pause between sweeps that release expired holds (0 turns the sweeper off)'),
  // At most 2000: a step unpacks two values a hold into one command, and Lua's unpack stops near 8000.
  SWEEP_BATCH_SIZE: Type.Integer({
    minimum: 1,
    maximum: 2000,
    default: 1000,
    description: 'most holds one sweep step releases for one product',
  }),
  // 1000 by default: twice REDIS_COMMAND_TIMEOUT_MS's default, the longest a live sweeper keeps a product between
  // claiming and rescheduling it (one step, then one ZADD, each bounded by that timeout), so a live instance's
  // lease does not lapse; short enough that a dead instance's products are taken over about a second after its
  // death. At least 100: below that, instances would sweep the same products at once as a rule (safe, wasted).
  SWEEP_LEASE_MS: Type.Integer({
    minimum: 100,
    maximum: TIMER_MAX_MS,
    default: 1000,
    description: 'products a sweeper claimed are left to it this long; another instance takes them over after',
  }),
  ORDER_PAYMENT_TTL_SECONDS: Seconds(900, 'an order unpaid this long after its creation is cancelled'),
  WEBHOOK_SECRET: Type.String({
    default: '',
    description:
      'payment webhook signing secrets, comma-separated (several during rotation); empty refuses every webhook (401) unless WEBHOOK_ALLOW_UNSIGNED=true',
  }),
  WEBHOOK_ALLOW_UNSIGNED: Type.Boolean({
    default: false,
    description: 'accept unsigned payment webhooks while WEBHOOK_SECRET is empty (local use only)',
  }),
  // 3 days by default: Stripe retries a delivery that long, so every retry of a webhook that came too early is kept.
  WEBHOOK_RETAIN_SECONDS: Seconds(259_200, 'how long a webhook delivery for an order that does not exist is kept'),
  CURRENCY: Type.String({
    default: 'USD',
    pattern: '^[A-Z]{3}$',
    description: 'ISO 4217 code of the prices; a payment in another currency does not pay an order',
  }),
  CONVERSION_LEASE_MS: Milliseconds(
    1,
    10_000,
    'after this, recovery decides a hold conversion whose process went away',
  ),
  RECOVERY_INTERVAL_MS: Milliseconds(
    0,
    1000,
    'pause between passes cancelling overdue orders and finishing interrupted work (0 turns it off)',
  ),
  REDIS_LOSS_CHECK_MS: Milliseconds(
    0,
    1000,
    "pause between checks that every product's copy in Redis is there under Postgres's generation (0 turns it off)",
  ),
  STOCK_REBALANCE_MS: Milliseconds(
    0,
    200,
    'pause between passes moving stock between the buckets of bucketed products, and finishing moves a crash interrupted (0 turns it off)',
  ),
  MEMORY_LOG_INTERVAL_MS: Milliseconds(
    0,
    0,
    'log process.memoryUsage() at info level this often, whatever LOG_LEVEL (0 turns it off)',
  ),
  // Either empty or at least 16 characters: a short token is guessed; the throttle below only slows guessing.
  ADMIN_TOKEN: Type.String({
    default: '',
    pattern: '^(|.{16,})$',
    description: 'bearer token for admin routes, at least 16 characters; empty disables them',
  }),
  ADMIN_AUTH_MAX_FAILURES: PositiveInt(10, 'wrong admin tokens one client address may present per window'),
  ADMIN_AUTH_WINDOW_SECONDS: Seconds(60, 'after this many failures an address is answered 429 until the window ends'),
  // Spelled out, not mapped from a list: a mapped list would type the level as any string.
  LOG_LEVEL: Type.Union(
    [
      Type.Literal('fatal'),
      Type.Literal('error'),
      Type.Literal('warn'),
      Type.Literal('info'),
      Type.Literal('debug'),
      Type.Literal('trace'),
      Type.Literal('silent'),
    ],
    { default: 'info', description: 'pino log level' },
  ),
  LOG_REQUESTS: Type.Boolean({
    default: false,
    description: 'log one line per request (method, route, url, status, ms, reqId) at info level',
  }),
  REDIS_COMMAND_TIMEOUT_MS: Milliseconds(1, 500, 'a Redis command unanswered after this fails with 503'),
  // At most a fifth of the timer limit: idle_in_transaction_session_timeout is five times this, and Postgres
  // refuses a timeout past 2^31 - 1 ms (every connection would then fail).
  DATABASE_TIMEOUT_MS: Type.Integer({
    minimum: 1,
    maximum: Math.floor(TIMER_MAX_MS / 5),
    default: 2000,
    description: 'a Postgres connect or query unanswered after this fails with 503',
  }),
  DATABASE_POOL_SIZE: PositiveInt(20, 'Postgres connections per instance'),
  BODY_LIMIT_BYTES: PositiveInt(16_384, 'largest request body accepted'),
  SHUTDOWN_DRAIN_MS: Milliseconds(
    0,
    1000,
    'after SIGTERM or SIGINT, requests are still served this long (with Connection: close, /readyz 503) before the server stops accepting',
  ),
  SHUTDOWN_GRACE_MS: Milliseconds(
    1,
    10_000,
    'after SIGTERM or SIGINT, the most time to drain, finish requests in flight and close the stores; then exit 1',
  ),
  // Worker processes of node:cluster sharing the port (src/workers.ts). At most 64: past the cores a machine has,
  // more workers only add Redis and Postgres connections.
  WEB_CONCURRENCY: Type.Integer({
    minimum: 1,
    maximum: 64,
    default: 1,
    description: 'worker processes serving the port (node:cluster); 1: one process, no primary',
  }),
  // Overload (src/routes/health.ts): /readyz alone answers 503 past these, so a load balancer sends this
  // instance less while it catches up; the API keeps serving what reaches it. The delay is the mean over a
  // second of samples: 1000 ms means the loop has been blocked most of that second.
  READY_MAX_EVENT_LOOP_DELAY_MS: Milliseconds(
    0,
    1000,
    'while the mean event-loop delay over the last second is above this, /readyz answers 503 (0 turns it off)',
  ),
  READY_MAX_HEAP_USED_BYTES: Type.Integer({
    minimum: 0,
    maximum: Number.MAX_SAFE_INTEGER,
    default: 0,
    description: 'while the V8 heap in use is above this many bytes, /readyz answers 503 (0 turns it off)',
  }),
  // Node's own defaults cut a client trickling headers after ~90 s and one trickling a body never.
  REQUEST_TIMEOUT_MS: Milliseconds(
    1,
    30_000,
    'a request (headers and body) not received in full after this is cut with 408',
  ),
  KEEP_ALIVE_TIMEOUT_MS: Milliseconds(
    1,
    72_000,
    'an idle keep-alive connection is closed after this (above the 60 s idle of common load balancers)',
  ),
  CORS_ORIGINS: Type.String({
    default: '',
    pattern: `^(${ORIGIN}(, *${ORIGIN})*)?$`,
    description: 'browser origins allowed to call the API, comma-separated (https://shop.example); empty: none',
  }),
  // Callers (src/plugins/callers.ts): who a request comes from, and how much one caller may ask.
  CUSTOMER_TOKEN_SECRET: Type.String({
    default: '',
    pattern: '^(|[\\x20-\\x7e]{32,})$',
    description: 'HS256 secret of customer tokens (at least 32 characters); empty: customer ids are self-declared',
  }),
  TRUST_PROXY: Type.String({
    default: '',
    pattern: '^(|true|[0-9]+|[0-9A-Fa-f.:/, ]+)$',
    description: "Fastify's trustProxy: empty (trust none), true, a hop count, or comma-separated addresses/CIDRs",
  }),
  RATE_LIMIT: Type.Union([Type.Literal('on'), Type.Literal('off')], {
    default: 'on',
    description: 'per-address and per-customer limits on POST /api/holds and POST /api/orders',
  }),
  RATE_LIMIT_WINDOW_SECONDS: Seconds(60, 'the window the rate limits count requests in'),
  RATE_LIMIT_PER_ADDRESS: PositiveInt(120, 'requests one client address may make to each limited route per window'),
  RATE_LIMIT_PER_CUSTOMER: PositiveInt(30, 'requests one verified customer may make to each limited route per window'),
  // Metrics (src/observability/metrics.ts): GET /metrics in Prometheus text.
  METRICS: Type.Union([Type.Literal('admin'), Type.Literal('open'), Type.Literal('off')], {
    default: 'admin',
    description:
      'GET /metrics: admin (the admin token), open (anyone: a private network only), off (no route, nothing recorded)',
  }),
  METRICS_PRODUCTS: Type.String({
    default: '',
    pattern: '^([0-9]{1,15}(, *[0-9]{1,15})*)?$',
    description: 'product ids always given their own product label, comma-separated (the watch list)',
  }),
  // A bound on the product label's values, so a catalogue of any size keeps the series count fixed.
  METRICS_PRODUCT_LIMIT: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 20,
    description: 'products besides the watch list given their own label, the first seen selling; the rest are "other"',
  }),
  METRICS_DRIFT_CHECK_MS: Milliseconds(
    0,
    30_000,
    'pause between sampled Redis-against-Postgres checks behind flashsale_invariant_drift (0 turns it off)',
  ),
  METRICS_DRIFT_SAMPLE: Type.Integer({
    minimum: 1,
    maximum: 500,
    default: 20,
    description: 'products one drift check compares (in turn through the catalogue, suspects again first)',
  }),
});

export type Config = Static<typeof ConfigSchema>;
type ConfigName = keyof Config;

/** What one setting must respect given another, checked once each is valid on its own. */
const RULES_BETWEEN_SETTINGS: { name: ConfigName; holds: (config: Config) => boolean; says: string }[] = [
  {
    name: 'SHUTDOWN_DRAIN_MS',
    holds: (c) => c.SHUTDOWN_DRAIN_MS < c.SHUTDOWN_GRACE_MS,
    says: 'must be shorter than SHUTDOWN_GRACE_MS, or every stop would run out of grace while draining',
  },
];

/** The configuration could not be read: `problems` has one line per bad variable, naming it. */
export class InvalidConfigError extends Error {
  override readonly name = 'InvalidConfigError';

  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
  }
}

/**
 * Reads the configuration from environment variables (an unset or empty one takes its default) and `overrides`
 * (values already typed, which win). Nothing is coerced or rounded: an integer setting must be written in decimal
 * digits, and a level must be one of those listed. Throws InvalidConfigError naming every bad variable and what
 * it accepts.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const values: Record<string, unknown> = {};
  const problems = new Map<ConfigName, string>();
  for (const name of Object.keys(ConfigSchema.properties) as ConfigName[]) {
    const text = env[name];
    if (text === undefined || text === '') continue;
    const value = fromText(ConfigSchema.properties[name], text);
    if (value === undefined) problems.set(name, problem(name, text));
    else values[name] = value;
  }
  const config: unknown = Value.Default(ConfigSchema, { ...values, ...overrides });
  for (const error of Value.Errors(ConfigSchema, config)) {
    const name = error.path.split('/')[1] as ConfigName;
    if (!problems.has(name)) problems.set(name, problem(name, error.value));
  }
  if (problems.size === 0) {
    for (const rule of RULES_BETWEEN_SETTINGS) {
      if (!rule.holds(config as Config)) problems.set(rule.name, `${rule.name}: ${rule.says}`);
    }
  }
  if (problems.size > 0) {
    const order = Object.keys(ConfigSchema.properties);
    throw new InvalidConfigError(
      [...problems].sort(([a], [b]) => order.indexOf(a) - order.indexOf(b)).map(([, line]) => line),
    );
  }
  return config as Config;
}

/** The typed value of a variable's text, or undefined when the text is not of the setting's kind. */
function fromText(schema: TSchema, text: string): unknown {
  if (KindGuard.IsInteger(schema)) return parseIntegerText(text);
  if (KindGuard.IsBoolean(schema)) return text === 'true' ? true : text === 'false' ? false : undefined;
  return text; // strings and unions of literal strings: checked against the schema as they are
}

/** One line of InvalidConfigError: the variable, its value unless it is text (a URL or token may be secret), what it accepts. */
function problem(name: ConfigName, value: unknown): string {
  const schema: TSchema = ConfigSchema.properties[name];
  const shown = KindGuard.IsString(schema) ? '' : `=${JSON.stringify(value)}`;
  return `${name}${shown}: expected ${accepts(schema)} (${schema.description})`;
}

/** What a setting's schema accepts, in words. */
function accepts(schema: TSchema): string {
  if (KindGuard.IsInteger(schema)) {
    const range =
      schema.maximum === undefined ? `of at least ${schema.minimum}` : `from ${schema.minimum} to ${schema.maximum}`;
    return `an integer ${range}, in decimal digits`;
  }
  if (KindGuard.IsBoolean(schema)) return 'true or false';
  if (KindGuard.IsUnion(schema)) return `one of ${schema.anyOf.map((option) => String(option.const)).join(', ')}`;
  if (KindGuard.IsString(schema)) return schema.pattern === undefined ? 'text' : `text matching ${schema.pattern}`;
  return `a value of kind ${String(schema[Kind])}`;
}
