import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { ConfigSchema, InvalidConfigError } from './config.js';

/** Where the service and the CLI look for settings besides the environment: `.env` in the working directory. */
export const ENV_FILE = '.env';

/**
 * The environment with the settings of `.env` (when there is one) under it: a variable set in the environment
 * wins over the file. The file may set only the service's settings (src/config.ts), so a misspelt name stops the
 * start instead of being ignored; the values are then checked by loadConfig like any other. Read with Node's own
 * parser (util.parseEnv, the one behind --env-file), which leaves process.env untouched.
 */
export function withEnvFile(env: NodeJS.ProcessEnv = process.env, file = resolve(ENV_FILE)): NodeJS.ProcessEnv {
  if (!existsSync(file)) return env;
  const fromFile = parseEnv(readFileSync(file, 'utf8'));
  const unknown = Object.keys(fromFile).filter((name) => !Object.hasOwn(ConfigSchema.properties, name));
  if (unknown.length > 0) {
    throw new InvalidConfigError(unknown.map((name) => `${name} (in ${file}): not a setting of the service`));
  }
  const merged: NodeJS.ProcessEnv = { ...fromFile };
  for (const [name, value] of Object.entries(env)) if (value !== undefined) merged[name] = value;
  return merged;
}
