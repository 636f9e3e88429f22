// Digits only: no sign, exponent, hex prefix, fraction, spaces, or leading zero ("010" may be meant as octal).
const DECIMAL_INTEGER = /^(0|[1-9][0-9]*)$/;

/**
 * The integer a text written in plain decimal digits stands for, or undefined for any other text. Number() and
 * Ajv's coercion would also read '1e3', '0x10', ' 5' and '' as numbers; parseInt would read '1.5' as 1.
 */
export function parseIntegerText(text: string): number | undefined {
  return DECIMAL_INTEGER.test(text) ? Number(text) : undefined;
}
