/** Every error the API answers with: a stable code and its HTTP status. */
export const ErrorCodes = {
  VALIDATION_ERROR: 400,
  INVALID_JSON: 400,
  CUSTOMER_ID_REQUIRED: 400,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  INVALID_SIGNATURE: 401,
  INVALID_CUSTOMER_TOKEN: 401,
  CUSTOMER_TOKEN_REQUIRED: 401,
  CUSTOMER_MISMATCH: 403,
  NOT_YOUR_HOLD: 403,
  NOT_FOUND: 404,
  PRODUCT_NOT_FOUND: 404,
  HOLD_NOT_FOUND: 404,
  ORDER_NOT_FOUND: 404,
  INSUFFICIENT_STOCK: 409,
  CUSTOMER_LIMIT_EXCEEDED: 409,
  STOCK_BELOW_COMMITTED: 409,
  HOLD_CONVERTED: 409,
  HOLD_CONVERTING: 409,
  HOLD_RELEASED: 409,
  HOLD_LOST: 409,
  ORDER_ALREADY_FINAL: 409,
  HOLD_EXPIRED: 410,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IDEMPOTENCY_KEY_REUSED: 422,
  RATE_LIMITED: 429,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** The body of every error answer: `{code, message, ...details}`. The one place such a body is made. */
export type ErrorBody<C extends ErrorCode = ErrorCode> = { code: C; message: string } & Record<string, unknown>;

export function errorBody<C extends ErrorCode>(
  code: C,
  message: string,
  details?: Record<string, unknown>,
): ErrorBody<C> {
  return details ? { code, message, ...details } : { code, message };
}

/** A failure the client is told about as `{code, message, ...details}` with the code's status. */
export class AppError extends Error {
  override readonly name = 'AppError';
  readonly statusCode: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra fields of the answer body, e.g. available_stock. */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.statusCode = ErrorCodes[code];
  }

  body(): ErrorBody {
    return errorBody(this.code, this.message, this.details);
  }
}

/**
 * Redis or Postgres could not be reached, or did not answer in time (503). Made only where a store's client
 * errors are classified (src/redis/errors.ts, src/db/errors.ts), so everything else that escapes is a bug (500).
 */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';

  constructor(
    readonly store: 'redis' | 'postgres',
    cause: unknown,
  ) {
    super(`${store} is unavailable: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
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
  holdExpired: (holdId: string) =>
    new AppError('HOLD_EXPIRED', `hold ${holdId} has expired; its units are for sale again`),
  holdReleased: (holdId: string) =>
    new AppError('HOLD_RELEASED', `hold ${holdId} was released; its units are for sale again`),
  holdLost: (holdId: string) =>
    new AppError(
      'HOLD_LOST',
      `hold ${holdId} was lost when Redis lost its data; its units are for sale again: place a new hold`,
    ),
  holdBeyondStock: (holdId: string) =>
    new AppError(
      'HOLD_LOST',
      `hold ${holdId} came from a Redis copy that missed sales; Postgres has no units left for it: no order made`,
    ),
  rebuilding: (productId: number) =>
    new AppError('SERVICE_UNAVAILABLE', `product ${productId} is being rebuilt from Postgres; try again shortly`),
  orderNotFound: (orderId: number | string) => new AppError('ORDER_NOT_FOUND', `order ${orderId} does not exist`),
  invalidSignature: (why: string) => new AppError('INVALID_SIGNATURE', `webhook signature rejected: ${why}`),
  orderAlreadyFinal: (orderId: number, status: string) =>
    new AppError('ORDER_ALREADY_FINAL', `order ${orderId} is already ${status}`, { order_id: orderId, status }),
  idempotencyKeyReused: () =>
    new AppError('IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used with a different request'),
  invalidCustomerToken: () =>
    new AppError('INVALID_CUSTOMER_TOKEN', 'the customer token is invalid, expired or wrongly signed'),
  customerTokenRequired: (why: string) =>
    new AppError('CUSTOMER_TOKEN_REQUIRED', `${why}: send Authorization: Bearer <customer token>`),
  customerMismatch: () =>
    new AppError('CUSTOMER_MISMATCH', 'customer_id differs from the customer the token was issued to'),
  notYourHold: (holdId: string) => new AppError('NOT_YOUR_HOLD', `hold ${holdId} belongs to another customer`),
  rateLimited: (retryAfterSeconds: number) =>
    new AppError('RATE_LIMITED', `too many requests; retry in ${retryAfterSeconds} s`, {
      retry_after_seconds: retryAfterSeconds,
    }),
  adminThrottled: (retryAfterSeconds: number) =>
    new AppError('RATE_LIMITED', 'too many wrong admin tokens from this address; try again later', {
      retry_after_seconds: retryAfterSeconds,
    }),
  unavailable: (what: string) => new AppError('SERVICE_UNAVAILABLE', `${what} is unavailable; try again shortly`),
};

/**
 * A hold refused for want of units: the answer a flash sale gives most, so it is a plain body answered 409, not
 * an error thrown through the error handler (that path cost as much CPU as granting a hold).
 */
export type HoldRefusal = ErrorBody<'INSUFFICIENT_STOCK' | 'CUSTOMER_LIMIT_EXCEEDED'> & {
  requested: number;
  available_stock?: number;
  per_customer_limit?: number;
  customer_units?: number;
};

export const refusals = {
  insufficientStock: (available: number, requested: number): HoldRefusal =>
    errorBody('INSUFFICIENT_STOCK', `only ${available} units available, ${requested} requested`, {
      available_stock: available,
      requested,
    }) as HoldRefusal,
  customerLimitExceeded: (alreadyHas: number, limit: number, requested: number): HoldRefusal =>
    errorBody(
      'CUSTOMER_LIMIT_EXCEEDED',
      `this customer already has ${alreadyHas} of at most ${limit} units; ${requested} more would exceed the limit`,
      { per_customer_limit: limit, customer_units: alreadyHas, requested },
    ) as HoldRefusal,
};
