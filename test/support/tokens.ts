import { SignJWT } from 'jose';

/** The CUSTOMER_TOKEN_SECRET of tests that turn customer tokens on. */
export const CUSTOMER_SECRET = 'test-customer-token-secret-0123456789abcdef';

/** A customer token as a merchant's backend issues it: HS256, `sub` the customer id, `exp` in `expiresIn`. */
export async function customerToken(
  customerId: string,
  options: { secret?: string; expiresIn?: string | number } = {},
): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(customerId)
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? '10m')
    .sign(new TextEncoder().encode(options.secret ?? CUSTOMER_SECRET));
}

/** The headers of a request made with a customer's token. */
export async function asCustomer(customerId: string): Promise<{ authorization: string }> {
  return { authorization: `Bearer ${await customerToken(customerId)}` };
}
