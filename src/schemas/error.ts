import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { errorBody, ErrorCodes, errors, refusals, type ErrorBody as ErrorAnswer, type ErrorCode } from '../errors.js';

/** Every error answer: a stable code, a message for people, and fields named by the code's documentation. */
export const ErrorSchema = Type.Object(
  {
    code: Type.String({ description: 'stable, UPPER_SNAKE' }),
    message: Type.String(),
  },
  { additionalProperties: true },
);
export type ErrorBody = Static<typeof ErrorSchema>;

/**
 * One answer of each error code, as the API gives it: the examples of the API documentation (GET /openapi.json).
 * Made by the factories of src/errors.ts where there is one, so an example says what the service says.
 */
export const ERROR_EXAMPLES: { readonly [C in ErrorCode]: ErrorAnswer } = {
  VALIDATION_ERROR: errors.validation('body/qty must be >= 1').body(),
  INVALID_JSON: errorBody('INVALID_JSON', "Body is not valid JSON but content-type is set to 'application/json'"),
  CUSTOMER_ID_REQUIRED: errors.customerIdRequired(7).body(),
  BAD_REQUEST: errorBody('BAD_REQUEST', "'/api/holds/%zz' is not a valid url component"),
  UNAUTHORIZED: errors.unauthorized().body(),
  INVALID_SIGNATURE: errors.invalidSignature('no v1 signature matches').body(),
  INVALID_CUSTOMER_TOKEN: errors.invalidCustomerToken().body(),
  CUSTOMER_TOKEN_REQUIRED: errors.customerTokenRequired('this belongs to a customer').body(),
  CUSTOMER_MISMATCH: errors.customerMismatch().body(),
  NOT_YOUR_HOLD: errors.notYourHold('7-Qm3xv0aZ_k9T').body(),
  NOT_FOUND: errorBody('NOT_FOUND', 'no route GET /api/nothing'),
  PRODUCT_NOT_FOUND: errors.productNotFound(7).body(),
  HOLD_NOT_FOUND: errors.holdNotFound('7-Qm3xv0aZ_k9T').body(),
  ORDER_NOT_FOUND: errors.orderNotFound(42).body(),
  INSUFFICIENT_STOCK: refusals.insufficientStock(1, 2),
  CUSTOMER_LIMIT_EXCEEDED: refusals.customerLimitExceeded(2, 2, 1),
  STOCK_BELOW_COMMITTED: errors.stockBelowCommitted(3, 2, 4).body(),
  HOLD_CONVERTED: errors.holdConverted('7-Qm3xv0aZ_k9T').body(),
  HOLD_CONVERTING: errors.holdConverting('7-Qm3xv0aZ_k9T').body(),
  HOLD_RELEASED: errors.holdReleased('7-Qm3xv0aZ_k9T').body(),
  HOLD_LOST: errors.holdLost('7-Qm3xv0aZ_k9T').body(),
  ORDER_ALREADY_FINAL: errors.orderAlreadyFinal(42, 'paid').body(),
  HOLD_EXPIRED: errors.holdExpired('7-Qm3xv0aZ_k9T').body(),
  PAYLOAD_TOO_LARGE: errorBody('PAYLOAD_TOO_LARGE', 'Request body is too large'),
  UNSUPPORTED_MEDIA_TYPE: errorBody('UNSUPPORTED_MEDIA_TYPE', 'Unsupported Media Type'),
  IDEMPOTENCY_KEY_REUSED: errors.idempotencyKeyReused().body(),
  RATE_LIMITED: errors.rateLimited(3).body(),
  INTERNAL_ERROR: errorBody('INTERNAL_ERROR', 'internal error'),
  SERVICE_UNAVAILABLE: errorBody(
    'SERVICE_UNAVAILABLE',
    'a data store is unavailable; try again shortly (with the same Idempotency-Key, if the request had one)',
  ),
};

/**
 * The error answers of a route, one schema per status, from the codes it can answer (each code's status is
 * src/errors.ts's): `code` is listed as a plain string enum and the schema stays one object, so the answer is
 * serialised as fast as with ErrorSchema (fast-json-stringify writes an enum as any string).
 */
export function errorResponses(...codes: ErrorCode[]): Record<number, TSchema> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(codes)) {
    const status = ErrorCodes[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries([...byStatus].map(([status, listed]) => [status, errorSchemaOf(listed)]));
}

function errorSchemaOf(codes: ErrorCode[]): TSchema {
  return Type.Object(
    {
      code: Type.Unsafe<ErrorCode>({ type: 'string', enum: codes, description: 'stable, UPPER_SNAKE' }),
      message: Type.String({ description: 'for people; may change' }),
    },
    {
      additionalProperties: true,
      description: `Error: ${codes.join(', ')}`,
      examples: codes.map((code) => ERROR_EXAMPLES[code]),
    },
  );
}

/** What any route can answer: 503 while the service stops (src/plugins/draining.ts) or a store is away; 500, a bug. */
export const ANY_ROUTE = ['SERVICE_UNAVAILABLE', 'INTERNAL_ERROR'] as const satisfies readonly ErrorCode[];
/**
 * What a route with path parameters can answer besides its schema's refusals: a parameter longer than Fastify
 * reads (400 VALIDATION_ERROR) or badly percent-encoded (400 BAD_REQUEST): src/plugins/errors.ts frameworkErrors.
 */
export const PATH_PARAMS = ['VALIDATION_ERROR', 'BAD_REQUEST'] as const satisfies readonly ErrorCode[];
/** What a route that reads a body can answer before it sees one (src/plugins/errors.ts, src/schemas/json-input.ts). */
export const BODY = [
  'VALIDATION_ERROR',
  'INVALID_JSON',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
] as const satisfies readonly ErrorCode[];
/** What an admin route can answer before anything else (src/plugins/admin-auth.ts). */
export const ADMIN = ['UNAUTHORIZED', 'RATE_LIMITED'] as const satisfies readonly ErrorCode[];
/** What a route that identifies its caller can answer (src/plugins/callers.ts identify). */
export const IDENTIFIED = ['INVALID_CUSTOMER_TOKEN'] as const satisfies readonly ErrorCode[];
