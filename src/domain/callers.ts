import { createHash } from 'node:crypto';
import { errors, type AppError } from '../errors.js';

/**
 * Who a request comes from. `customer` is a customer proven by a token signed with CUSTOMER_TOKEN_SECRET; with
 * no secret there are no proven customers and every shopper is `anonymous` (a body's customer_id is then only
 * what the client says). `address` is the client's address as Fastify reads it (TRUST_PROXY).
 */
export type Caller =
  | { kind: 'admin'; address: string }
  | { kind: 'customer'; customerId: string; address: string }
  | { kind: 'anonymous'; address: string };

/** How far customer ids are trusted: `tokens` when CUSTOMER_TOKEN_SECRET is set. */
export interface CustomerTrust {
  tokens: boolean;
}

/**
 * The customer a hold is made for. With tokens, the token's customer: a body customer_id must be that one (403
 * otherwise), and an anonymous caller may not name one (401). Without tokens, the body's customer_id as given.
 * The admin token may name any customer (back-office holds).
 */
export function holdCustomer(trust: CustomerTrust, caller: Caller, declared: string | null): string | null {
  if (caller.kind === 'admin' || !trust.tokens) return declared;
  if (caller.kind === 'anonymous') {
    if (declared !== null) throw errors.customerTokenRequired('a customer_id is only accepted with its token');
    return null;
  }
  if (declared !== null && declared !== caller.customerId) throw errors.customerMismatch();
  return caller.customerId;
}

/**
 * Whether the caller may act on something made for `owner`. With tokens, a customer's hold or order is that
 * customer's (or the admin's) alone; one made without a customer, and everything without tokens, is open to
 * whoever knows its unguessable hold id (checked by the caller of this function).
 */
export function ownerCheck(trust: CustomerTrust, caller: Caller, owner: string | null, notYours: () => AppError): void {
  if (!trust.tokens || owner === null || caller.kind === 'admin') return;
  if (caller.kind === 'anonymous') throw errors.customerTokenRequired('this belongs to a customer');
  if (caller.customerId !== owner) throw notYours();
}

/** The customer id a caller is shown: the admin sees it, a proven customer sees their own, nobody else any. */
export function shownCustomerId(caller: Caller, owner: string | null): string | null {
  if (caller.kind === 'admin') return owner;
  return caller.kind === 'customer' && caller.customerId === owner ? owner : null;
}

/**
 * The Idempotency-Key as stored: scoped to its caller (a proven customer, else the client address), so nobody
 * can replay or spoil another caller's key, and hashed, so a stored key is short whatever the client sent.
 */
export function scopedIdempotencyKey(caller: Caller, key: string): string {
  const scope =
    caller.kind === 'customer' ? ['c', caller.customerId] : caller.kind === 'admin' ? ['admin'] : ['a', caller.address];
  return createHash('sha256')
    .update(JSON.stringify([...scope, key]))
    .digest('base64url');
}

/**
 * The client a rate limit counts, from its address: an IPv4 address as it is, an IPv6 address by its /64 (one
 * subscriber's network: a client given a /64 could otherwise take a new address for every request).
 */
export function addressSubject(address: string): string {
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const [head = '', tail = ''] = address.toLowerCase().split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = address.includes('::')
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
