import type { TSchema } from '@sinclair/typebox';

/**
 * What the API documentation (src/plugins/api-docs.ts) says beyond the schemas that check and serialise: who may
 * call a route, and the headers some answers carry. Fastify reads none of it.
 */

/** The security schemes of GET /openapi.json, by name. */
export const SECURITY_SCHEMES = {
  adminToken: {
    type: 'http',
    scheme: 'bearer',
    description:
      "`Authorization: Bearer <ADMIN_TOKEN>`. Admin routes answer 401 UNAUTHORIZED without it (always, while ADMIN_TOKEN is unset), and 429 RATE_LIMITED to an address that sent ADMIN_AUTH_MAX_FAILURES wrong tokens within ADMIN_AUTH_WINDOW_SECONDS. On hold and order routes the admin token may act on any customer's holds and orders.",
  },
  customerToken: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'A customer token: an HS256 JWT signed with CUSTOMER_TOKEN_SECRET, with `sub` (the customer id, 1-128 printable ASCII characters) and `exp`. Only while CUSTOMER_TOKEN_SECRET is set; without it, customer ids are what the body says and a bearer token that is not the admin token is ignored. A token that does not verify is refused with 401 INVALID_CUSTOMER_TOKEN.',
  },
  webhookSignature: {
    type: 'apiKey',
    in: 'header',
    name: 'X-Signature',
    description:
      '`X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, t + "." + raw body)>`, with t within 300 s of now; several v1 values (and several secrets, comma-separated, during a rotation) are accepted. Checked before the body is: a delivery without a valid signature learns only 401 INVALID_SIGNATURE. With no WEBHOOK_SECRET every delivery is refused, unless WEBHOOK_ALLOW_UNSIGNED=true (local use only).',
  },
} as const;

type SchemeName = keyof typeof SECURITY_SCHEMES;
type Security = Partial<Record<SchemeName, string[]>>[];

/** Admin routes: the admin token only. */
export const ADMIN_ONLY: Security = [{ adminToken: [] }];
/** Hold and order routes: anyone (`{}`), a customer proven by a token, or the admin. */
export const ANY_CALLER: Security = [{}, { customerToken: [] }, { adminToken: [] }];
/** The payment webhook: a signed delivery. */
export const SIGNED_DELIVERY: Security = [{ webhookSignature: [] }];

/** An answer that may be the stored first answer to its idempotency key, marked `Idempotent-Replayed: true`. */
export function replayable<T extends TSchema>(schema: T): T {
  return {
    ...schema,
    headers: {
      'idempotent-replayed': {
        type: 'string',
        enum: ['true'],
        description: 'present when this is the stored answer to an earlier request with the same idempotency key',
      },
    },
  };
}
