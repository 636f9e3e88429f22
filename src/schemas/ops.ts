import { Type, type Static } from '@sinclair/typebox';
import { OPS_ROWS } from '../ops/sale-watch.js';

const NullableNumber = (description: string) => Type.Union([Type.Number(), Type.Null()], { description });
const NullableCount = (description: string) => Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description });

export const OpsQuerySchema = Type.Object(
  {
    after: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'only the plot points sampled after this time (ms since the epoch); omit it for all of them',
      }),
    ),
  },
  { additionalProperties: false },
);

export const OpsProductRateSchema = Type.Object({
  id: Type.Integer({ minimum: 1 }),
  holds_per_s: NullableNumber('holds granted per second by this instance; null without counters or across a gap'),
  refusals_per_s: NullableNumber('hold requests refused per second by this instance (any reason)'),
  units_taken_per_s: NullableNumber(
    'change of held + sold per second, every instance together (negative while holds end faster than they are made)',
  ),
});
export type OpsProductRate = Static<typeof OpsProductRateSchema>;

export const OpsPointSchema = Type.Object({
  t: Type.Integer({ description: 'when the sample was taken (ms since the epoch)' }),
  products: Type.Array(OpsProductRateSchema),
  unavailable_per_s: NullableNumber('answers 503 per second by this instance'),
  sweeper_lag_seconds: NullableNumber('age of the oldest expired hold still present'),
});
export type OpsPoint = Static<typeof OpsPointSchema>;

const SNAPSHOT_EXAMPLE = {
  t: 1796174714127,
  sample_ms: 1000,
  history_ms: 300000,
  rates_from: 'counters',
  products: [
    {
      id: 7,
      name: 'Limited sneaker',
      stock: 100,
      held: 4,
      sold: 8,
      available_stock: 88,
      holds_total: 12,
      refusals_total: 3,
      sold_out_at: [],
    },
  ],
  points: [
    {
      t: 1796174714127,
      products: [{ id: 7, holds_per_s: 2, refusals_per_s: 0, units_taken_per_s: 3.5 }],
      unavailable_per_s: 0,
      sweeper_lag_seconds: 0,
    },
  ],
  unavailable_total: 0,
  webhooks: { paid: 8, duplicate: 1 },
  sweeper_lag_seconds: 0,
};

export const OpsSnapshotSchema = Type.Object(
  {
    t: Type.Integer({ description: 'when the latest sample was taken (ms since the epoch)' }),
    sample_ms: Type.Integer({ description: 'the most often a sample is taken; poll at this pace' }),
    history_ms: Type.Integer({ description: 'how far back the points reach' }),
    rates_from: Type.Union([Type.Literal('counters'), Type.Literal('stock figures')], {
      description:
        "counters: the service's metrics; stock figures: without them, only units_taken_per_s is known and the other rates are null",
    }),
    products: Type.Array(
      Type.Object({
        id: Type.Integer({ minimum: 1 }),
        name: Type.String(),
        stock: Type.Integer(),
        held: Type.Integer(),
        sold: Type.Integer(),
        available_stock: Type.Integer({ description: 'stock - held - sold, as GET /api/products/:id reads it' }),
        holds_total: NullableCount('holds granted by this instance since it started'),
        refusals_total: NullableCount('hold requests refused by this instance since it started'),
        sold_out_at: Type.Array(Type.Integer(), {
          description: 'moments (ms since the epoch) within history_ms when available stock reached 0',
        }),
      }),
      {
        description: `at most ${OPS_ROWS}, in id order: the products the metrics count (most holds first), then the first of the catalogue`,
      },
    ),
    points: Type.Array(OpsPointSchema, { description: 'one a sample, oldest first' }),
    unavailable_total: NullableCount('answers 503 by this instance since it started; null without counters'),
    webhooks: Type.Union([Type.Record(Type.String(), Type.Integer({ minimum: 0 })), Type.Null()], {
      description: 'payment webhook deliveries by result since this instance started; null without counters',
    }),
    sweeper_lag_seconds: NullableNumber('age of the oldest expired hold still present; null without counters'),
  },
  { examples: [SNAPSHOT_EXAMPLE] },
);
export type OpsSnapshot = Static<typeof OpsSnapshotSchema>;
