import { accessSync, constants } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import type { Test } from 'tap';

/** Debian's chromium package (`apt-get install -y chromium`); never a browser downloaded by playwright. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Why a browser test cannot run here, or false when it can. */
export function chromiumMissing(): string | false {
  try {
    accessSync(CHROMIUM_PATH, constants.X_OK);
    return false;
  } catch {
    return `no Chromium at ${CHROMIUM_PATH}: apt-get install -y chromium (or set CHROMIUM_PATH) to run this test`;
  }
}

/** Headless Chromium, closed when the test ends. */
export async function launchChromium(t: Test): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 60_000,
  });
  t.teardown(() => browser.close());
  return browser;
}
