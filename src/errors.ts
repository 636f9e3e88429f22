/** Every error the API answers with: a stable code, its HTTP status, and a message made in one place. */
export const ErrorCodes = {
  VALIDATION_ERROR: 400,
  INVALID_JSON: 400,
  CUSTOMER_ID_REQUIRED: 400,
  UNAUTHORIZED: 401,
  PRODUCT_NOT_FOUND: 404,
  HOLD_NOT_FOUND: 404,
  NOT_FOUND: 404,
  ORDER_NOT_FOUND: 404,
  INVALID_SIGNATURE: 401,
  HOLD_EXPIRED: 410,
  HOLD_RELEASED: 409,
  HOLD_CONVERTING: 409,
  ORDER_ALREADY_FINAL: 409,
  BAD_REQUEST: 400,
  INSUFFICIENT_STOCK: 409,
  CUSTOMER_LIMIT_EXCEEDED: 409,
  STOCK_BELOW_COMMITTED: 409,
  HOLD_CONVERTED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IDEMPOTENCY_KEY_REUSED: 422,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** A failure the client is told about as `{code, message, ...details}` with the code's status. */
export class AppError extends Error {
  override readonly name = 'AppError';
  readonly statusCode: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra fields of the answer body, e.g. available_stock. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.statusCode = ErrorCodes[code];
  }
}

export const errors = {
  validation: (message: string) => new AppError('VALIDATION_ERROR', message),
  invalidJson: (message: string) => new AppError('INVALID_JSON', message),
  unauthorized: () => new AppError('UNAUTHORIZED', 'a valid admin bearer token is required'),
  productNotFound: (productId: number | string) =>
    new AppError('PRODUCT_NOT_FOUND', `product ${productId} does not exist`),
  holdNotFound: (holdId: string) => new AppError('HOLD_NOT_FOUND', `hold ${holdId} does not exist`),

  customerIdRequired: (productId: number) =>
    new AppError('CUSTOMER_ID_REQUIRED', `product ${productId} has a per-customer limit: customer_id is required`),
  stockBelowCommitted: (stock: number, held: number, sold: number) =>
    new AppError('STOCK_BELOW_COMMITTED', `stock ${stock} is below the ${held + sold} units held or sold`, {
      held,
      sold,
    }),
  holdConverted: (holdId: string) =>
    new AppError('HOLD_CONVERTED', `hold ${holdId} already became an order and cannot be released`),
  holdConverting: (holdId: string) =>
    new AppError('HOLD_CONVERTING', `hold ${holdId} is being turned into an order and cannot be released`),
  holdExpired: (holdId: string) => new AppError('HOLD_EXPIRED', `hold ${holdId} has expired; its units are for sale again`),
  holdReleased: (holdId: string) => new AppError('HOLD_RELEASED', `hold ${holdId} was released; its units are for sale again`),
  orderNotFound: (orderId: number | string) => new AppError('ORDER_NOT_FOUND', `order ${orderId} does not exist`),
  invalidSignature: (why: string) => new AppError('INVALID_SIGNATURE', `webhook signature rejected: ${why}`),
  orderAlreadyFinal: (orderId: number, status: string) =>
    new AppError('ORDER_ALREADY_FINAL', `order ${orderId} is already ${status}`, { order_id: orderId, status }),
  idempotencyKeyReused: () =>
    new AppError('IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used with a different request'),
  unavailable: (what: string) =>
    new AppError('SERVICE_UNAVAILABLE', `${what} is unavailable; try again shortly`),
};

/**
 * A hold refused for want of units: the answer a flash sale gives most, so it is a plain body, not an error
 * thrown through the error handler (that path cost as much CPU as granting a hold).
 */
export interface HoldRefusal {
  code: 'INSUFFICIENT_STOCK' | 'CUSTOMER_LIMIT_EXCEEDED';
  message: string;
  available_stock?: number;
  requested: number;
  per_customer_limit?: number;
  customer_units?: number;
}

export const refusals = {
  insufficientStock: (available: number, requested: number): HoldRefusal => ({
    code: 'INSUFFICIENT_STOCK',
    message: `only ${available} units available, ${requested} requested`,
    available_stock: available,
    requested,
  }),
  customerLimitExceeded: (alreadyHas: number, limit: number, requested: number): HoldRefusal => ({
    code: 'CUSTOMER_LIMIT_EXCEEDED',
    message: `this customer already has ${alreadyHas} of at most ${limit} units; ${requested} more would exceed the limit`,
    per_customer_limit: limit,
    customer_units: alreadyHas,
    requested,
  }),
};

const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
]);
// Redis replies that mean "not now" rather than "wrong request".
const REDIS_TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|READONLY)\b/;
const CLIENT_UNAVAILABLE_MESSAGE =
  /Command timed out|enableOfflineQueue|Connection is closed|Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|the database system is (starting up|shutting down)|terminating connection|not queryable|Client was closed/i;

/**
 * Whether an error from ioredis or pg means the store could not be reached in time (answer 503),
 * as opposed to a bug or a rejected command (answer 500).
 */
export function isStoreUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NETWORK_ERROR_CODES.has(code)) return true;
    // Postgres SQLSTATE classes 08 (connection exception) and 57P (operator intervention: shutdown, crash).
    // 57014: the server's statement_timeout cancelled the query (a lock wait, an overloaded server).
    if (/^(08|57P)/.test(code) || code === '53300' || code === '57014') return true;
  }
  if (err.name === 'MaxRetriesPerRequestError') return true;
  if (err.name === 'ReplyError') return REDIS_TRANSIENT_REPLY.test(err.message);
  return CLIENT_UNAVAILABLE_MESSAGE.test(err.message);
}
