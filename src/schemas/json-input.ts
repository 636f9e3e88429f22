import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors, type AppError } from '../errors.js';

/** Deepest nesting of arrays and objects a JSON body may have: no body of this API needs more than 3. */
export const MAX_JSON_DEPTH = 32;

// NUL: Postgres keeps none in text or jsonb. A surrogate matched with the u flag is an unpaired one (a pair is
// one code point): UTF-8 cannot carry it, so Postgres's jsonb refuses its \ud800 escape and text gets U+FFFD.
const UNSTORABLE = /[\0\p{Cs}]/u;

/**
 * Why a parsed JSON body cannot be taken (a 400 to answer), or undefined when it can: no NUL character or
 * unpaired surrogate in any key or string, no nesting deeper than MAX_JSON_DEPTH. Walked with a stack of its
 * own, never by recursion: the depth of client data must not decide the depth of this process's call stack.
 */
export function unstorableJson(document: unknown): AppError | undefined {
  const pending: [value: unknown, depth: number][] = [[document, 0]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [value, depth] = next;
    if (typeof value === 'string') {
      if (UNSTORABLE.test(value)) return unstorableText();
    } else if (value !== null && typeof value === 'object') {
      if (depth >= MAX_JSON_DEPTH) {
        return errors.validation(`the body nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels`);
      }
      if (Array.isArray(value)) {
        for (const item of value) pending.push([item, depth + 1]);
      } else {
        for (const [key, item] of Object.entries(value)) {
          if (UNSTORABLE.test(key)) return unstorableText();
          pending.push([item, depth + 1]);
        }
      }
    }
  }
  return undefined;
}

const unstorableText = () =>
  errors.validation('the body must not contain NUL characters or unpaired UTF-16 surrogates (\\ud800-\\udfff)');

type Done = (err: Error | null, body?: unknown) => void;

/**
 * The app's JSON body parser: Fastify's own (prototype-poisoning checks included), then unstorableJson, so bad
 * text or nesting is a 400 before any route sees the body.
 */
export function jsonBodyParser(app: FastifyInstance) {
  const parse = app.getDefaultJsonParser('error', 'error');
  return (request: FastifyRequest, body: string, done: Done): void => {
    parse(request, body, (err, value) => {
      if (err) return done(err);
      const refusal = unstorableJson(value);
      return refusal ? done(refusal) : done(null, value);
    });
  };
}
