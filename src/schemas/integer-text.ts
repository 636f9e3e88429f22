import type { FastifyRequest, FastifySchema, preValidationHookHandler } from 'fastify';

// Digits only: no sign, exponent, hex prefix, fraction, spaces, or leading zero ("010" may be meant as octal).
const DECIMAL_INTEGER = /^(0|[1-9][0-9]*)$/;

/**
 * The integer a text written in plain decimal digits stands for, or undefined for any other text. Number() reads
 * '' as 0 and '0x10' as 16, Ajv's coercion reads '1e3' and ' 5' as numbers, parseInt reads '1.5' as 1.
 */
export function parseIntegerText(text: string): number | undefined {
  return DECIMAL_INTEGER.test(text) ? Number(text) : undefined;
}

// The properties typed integer in a params or querystring schema, found once per schema.
const integerProperties = new WeakMap<object, string[]>();

function integerPropertiesOf(schema: unknown): string[] {
  if (schema === null || typeof schema !== 'object') return [];
  let names = integerProperties.get(schema);
  if (names === undefined) {
    const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
    names = Object.keys(properties).filter((name) => properties[name]?.type === 'integer');
    integerProperties.set(schema, names);
  }
  return names;
}

function readIntegers(values: unknown, schema: unknown): void {
  if (values === null || typeof values !== 'object') return;
  const record = values as Record<string, unknown>;
  for (const name of integerPropertiesOf(schema)) {
    const text = record[name];
    if (typeof text !== 'string') continue;
    const value = parseIntegerText(text);
    if (value !== undefined) record[name] = value;
  }
}

/**
 * preValidation hook of a route with integers in its path or query string (ids, page sizes): reads the ones
 * written in plain decimal digits as numbers, so the integer schemas of JSON bodies (ProductIdSchema,
 * OrderIdSchema) validate URLs too. Any other text ('0x10', '1e3', '7.0', ' 5') is left as text, which the
 * schema refuses: 400 VALIDATION_ERROR. Ajv's coercion is off for the whole app, since it would also turn '1'
 * into 1 in a body, and it reads '0x10' and '1e3' as numbers.
 */
export const readUrlIntegers: preValidationHookHandler = (request: FastifyRequest, _reply, done) => {
  const schema = request.routeOptions.schema as FastifySchema | undefined;
  if (schema?.params) readIntegers(request.params, schema.params);
  if (schema?.querystring) readIntegers(request.query, schema.querystring);
  done();
};
