import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { errors as joseErrors, jwtVerify } from 'jose';
import type { Config } from '../config.js';
import { addressSubject, type Caller, type CustomerTrust } from '../domain/callers.js';
import { errors } from '../errors.js';
import { requestCounterKey } from '../redis/keys.js';
import type { RequestCounter } from '../redis/request-counts.js';

/** The routes with rate limits; each has its own counters. */
export type LimitedRoute = 'holds' | 'orders';

declare module 'fastify' {
  interface FastifyInstance {
    /** Whether customer ids are proven by tokens (CUSTOMER_TOKEN_SECRET set). */
    customerTrust: CustomerTrust;
    /**
     * Who sent the request: the admin token, a valid customer token, or nobody in particular. A token that is
     * neither (bad signature, expired, no `sub`) is refused with 401 INVALID_CUSTOMER_TOKEN while tokens are on.
     */
    identify: (request: FastifyRequest) => Promise<Caller>;
    /** Counts a request against its caller's limits on a route: 429 RATE_LIMITED once one is spent. */
    limitRate: (route: LimitedRoute, caller: Caller) => Promise<void>;
  }
}

/** Fastify's trustProxy from TRUST_PROXY: '' trusts no proxy, 'true' every one, digits a hop count, else addresses. */
export function trustProxyOption(text: string): boolean | string | ((address: string, hop: number) => boolean) {
  if (text === '') return false;
  if (text === 'true') return true;
  if (!/^[0-9]+$/.test(text)) return text;
  const hops = Number(text);
  return (_address, hop) => hop < hops;
}

// Clock skew allowed on a token's exp and nbf (seconds): the merchant's backend and this service keep time apart.
const TOKEN_CLOCK_TOLERANCE_S = 5;

/** Callers: who a request is from (admin, proven customer, anonymous), and the rate limits per caller. */
export default fp<{ config: Config }>(
  async (app, { config }) => {
    const secret = config.CUSTOMER_TOKEN_SECRET ? new TextEncoder().encode(config.CUSTOMER_TOKEN_SECRET) : null;
    app.decorate('customerTrust', Object.freeze({ tokens: secret !== null }));
    if (!secret) {
      app.log.warn(
        'customer ids are self-declared: set CUSTOMER_TOKEN_SECRET so customers prove who they are (per-customer limits mean little without it)',
      );
    }

    async function customerOf(token: string): Promise<string> {
      try {
        // HS256 only: a token naming another algorithm (none, RS256 with our secret as a key) is refused.
        const { payload } = await jwtVerify(token, secret!, {
          algorithms: ['HS256'],
          requiredClaims: ['sub', 'exp'],
          clockTolerance: TOKEN_CLOCK_TOLERANCE_S,
        });
        if (typeof payload.sub !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(payload.sub)) {
          throw errors.invalidCustomerToken();
        }
        return payload.sub;
      } catch (err) {
        if (err instanceof joseErrors.JOSEError) throw errors.invalidCustomerToken();
        throw err;
      }
    }

    app.decorate('identify', async (request: FastifyRequest): Promise<Caller> => {
      const address = request.ip;
      const header = request.headers.authorization;
      if (header === undefined) return { kind: 'anonymous', address };
      const token = header.startsWith('Bearer ') ? header.slice(7) : '';
      if (app.isAdminToken(token)) return { kind: 'admin', address };
      // Without a secret there is nothing to verify a customer token with: the caller is anonymous.
      if (!secret) return { kind: 'anonymous', address };
      return { kind: 'customer', customerId: await customerOf(token), address };
    });

    if (config.RATE_LIMIT === 'off') {
      app.log.warn('rate limits are off (RATE_LIMIT=off): any client may place holds and orders as fast as it can');
      app.decorate('limitRate', async () => {});
      return;
    }
    const windowMs = config.RATE_LIMIT_WINDOW_SECONDS * 1000;
    const counts = app.redisCommands.requestCounts(windowMs);
    const prefix = app.settings.redisKeyPrefix;
    app.decorate('limitRate', async (route: LimitedRoute, caller: Caller) => {
      if (caller.kind === 'admin') return;
      const counters: RequestCounter[] = [
        {
          key: requestCounterKey(prefix, route, `a:${addressSubject(caller.address)}`),
          limit: config.RATE_LIMIT_PER_ADDRESS,
        },
      ];
      // Only a proven customer is counted as one: a self-declared id would let anyone spend another's limit.
      if (caller.kind === 'customer') {
        counters.push({
          key: requestCounterKey(prefix, route, `c:${caller.customerId}`),
          limit: config.RATE_LIMIT_PER_CUSTOMER,
        });
      }
      const retryAfterMs = await counts.count(counters);
      if (retryAfterMs > 0) throw errors.rateLimited(Math.ceil(retryAfterMs / 1000));
    });
  },
  { name: 'callers', dependencies: ['stores', 'admin-auth'] },
);
