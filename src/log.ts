import type { BaseLogger } from 'pino';

/** What the rules need of a logger (Fastify's and pino's both fit). */
export type Logger = Pick<BaseLogger, 'info' | 'warn' | 'error' | 'debug'>;
