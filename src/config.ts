import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

const PositiveInt = (defaultValue: number, description: string) =>
  Type.Integer({ minimum: 1, default: defaultValue, description });

/** The service's whole configuration, read from the environment: one schema, one type. */
export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000, description: 'HTTP port' }),
  HOST: Type.String({ default: '0.0.0.0', description: 'HTTP listen address' }),
  REDIS_URL: Type.String({ default: 'redis://127.0.0.1:6379', description: 'Redis connection URL' }),
  DATABASE_URL: Type.String({
    default: 'postgres://postgres@127.0.0.1:5432/flashsale',
    description: 'PostgreSQL connection URL (the database is created when missing)',
  }),
  REDIS_KEY_PREFIX: Type.String({
    default: 'fs:',
    pattern: '^[A-Za-z0-9_:.-]*$',
    description: 'prefix of every Redis key, so several deployments or test runs can share one Redis',
  }),
  HOLD_TTL_SECONDS: PositiveInt(120, 'how long a hold reserves its units'),
  HOLD_RETAIN_SECONDS: PositiveInt(86_400, 'how long an ended hold stays readable'),
  MAX_QTY_PER_HOLD: PositiveInt(10, 'most units in one hold'),
  IDEMPOTENCY_TTL_SECONDS: PositiveInt(86_400, 'how long an Idempotency-Key is remembered'),
  SOLD_OUT_CACHE_MS: Type.Integer({
    minimum: 0,
    default: 20,
    description: 'an instance refuses holds on a product it saw sold out for this long without asking Redis, then while one request asks (at most as long again; 0: off)',
  }),
  SWEEP_INTERVAL_MS: Type.Integer({
    minimum: 0,
    default: 250,
    description: 'pause between sweeps that release expired holds (0 turns the sweeper off)',
  }),
  // At most 2000: a step unpacks two values a hold into one command, and Lua's unpack stops near 8000.
  SWEEP_BATCH_SIZE: Type.Integer({ minimum: 1, maximum: 2000, default: 1000, description: 'most holds one sweep step releases for one product' }),
  ORDER_PAYMENT_TTL_SECONDS: PositiveInt(900, 'an order unpaid this long after its creation is cancelled'),
  WEBHOOK_SECRET: Type.String({
    default: '',
    description: 'payment webhook signing secrets, comma-separated (several during rotation); empty accepts unsigned',
  }),
  CONVERSION_LEASE_MS: PositiveInt(10_000, 'after this, recovery decides a hold conversion whose process went away'),
  RECOVERY_INTERVAL_MS: Type.Integer({
    minimum: 0,
    default: 1000,
    description: 'pause between passes cancelling overdue orders and finishing interrupted work (0 turns it off)',
  }),
  ADMIN_TOKEN: Type.String({ default: '', description: 'bearer token for admin routes; empty disables them' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info', description: 'pino log level' },
  ),
  REDIS_COMMAND_TIMEOUT_MS: PositiveInt(500, 'a Redis command unanswered after this fails with 503'),
  DATABASE_TIMEOUT_MS: PositiveInt(2000, 'a Postgres connect or query unanswered after this fails with 503'),
  DATABASE_POOL_SIZE: PositiveInt(20, 'Postgres connections per instance'),
  BODY_LIMIT_BYTES: PositiveInt(16_384, 'largest request body accepted'),
});

export type Config = Static<typeof ConfigSchema>;

/** Reads the configuration from environment variables, applying defaults; throws listing every bad value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  const config = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, { ...raw, ...overrides }));
  if (!Value.Check(ConfigSchema, config)) {
    const problems = [...Value.Errors(ConfigSchema, config)].map((e) => `${e.path.slice(1)}: ${e.message}`);
    throw new Error(`invalid configuration: ${problems.join('; ')}`);
  }
  return config;
}

// PROVISIONAL(settings): replaced by the settings object of src/config.ts when merged.
export interface Settings {
  holdTtlMs: number;
  holdRetainMs: number;
  idempotencyTtlMs: number;
  orderPaymentTtlMs: number;
  convertedHoldRetainMs: number;
  inlineExpiryLimit: number;
}
export function settingsFrom(config: Config): Settings {
  const holdRetainMs = config.HOLD_RETAIN_SECONDS * 1000;
  const orderPaymentTtlMs = config.ORDER_PAYMENT_TTL_SECONDS * 1000;
  return {
    holdTtlMs: config.HOLD_TTL_SECONDS * 1000,
    holdRetainMs,
    idempotencyTtlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
    orderPaymentTtlMs,
    convertedHoldRetainMs: Math.max(holdRetainMs, 2 * orderPaymentTtlMs),
    inlineExpiryLimit: 100,
  };
}
