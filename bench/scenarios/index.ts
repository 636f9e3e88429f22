import type { Scenario } from '../lib/scenario.js';
import type { ScenarioName } from '../lib/settings.js';
import { catalogue } from './catalogue.js';
import { checkout } from './checkout.js';
import { expiryStorm } from './expiry-storm.js';
import { hotSku } from './hot-sku.js';
import { sellout } from './sellout.js';
import { soak } from './soak.js';
import { soldOut } from './sold-out.js';

export const SCENARIOS: Record<ScenarioName, Scenario> = {
  'hot-sku': hotSku,
  'sold-out': soldOut,
  sellout,
  catalogue,
  checkout,
  'expiry-storm': expiryStorm,
  soak,
};
