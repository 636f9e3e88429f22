import { createHmac, timingSafeEqual } from 'node:crypto';

/** How far a signature's timestamp may be from now, either way: older ones may be replays. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

export type SignatureCheck = { valid: true } | { valid: false; reason: string };

/**
 * Checks `X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + raw body)>` against every secret
 * (several during a rotation) and every v1 value (a provider rotating its own secret sends several).
 */
export function checkSignature(
  header: string | undefined,
  rawBody: string,
  secrets: readonly string[],
  nowSeconds: number = Math.floor(Date.now() / 1000),
): SignatureCheck {
  if (!header) return { valid: false, reason: 'X-Signature header missing' };
  let timestamp: string | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(',')) {
    const [name, value = ''] = part.trim().split('=', 2) as [string, string?];
    if (name === 't') timestamp = value;
    // A v1 that is not 64 hex digits can never match; it is skipped, not compared.
    else if (name === 'v1' && /^[0-9a-fA-F]{64}$/.test(value)) signatures.push(Buffer.from(value, 'hex'));
  }
  if (!timestamp || !/^[0-9]{1,12}$/.test(timestamp)) return { valid: false, reason: 'no valid t= timestamp' };
  if (Math.abs(nowSeconds - Number(timestamp)) > SIGNATURE_TOLERANCE_SECONDS) {
    return { valid: false, reason: `timestamp outside the ${SIGNATURE_TOLERANCE_SECONDS} s tolerance` };
  }
  if (signatures.length === 0) return { valid: false, reason: 'no well-formed v1 signature' };
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest();
    // Equal lengths by construction (32 bytes), as timingSafeEqual requires.
    if (signatures.some((signature) => timingSafeEqual(signature, expected))) return { valid: true };
  }
  return { valid: false, reason: 'no v1 signature matches' };
}

/** Signs a body as a provider would: the value of an X-Signature header. */
export function signPayload(
  rawBody: string,
  secret: string,
  timestamp: number = Math.floor(Date.now() / 1000),
): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex')}`;
}
