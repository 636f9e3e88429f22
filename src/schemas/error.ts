import { Type, type Static } from '@sinclair/typebox';

/** Every error answer: a stable code, a message for people, and fields named by the code's documentation. */
export const ErrorSchema = Type.Object(
  {
    code: Type.String({ description: 'stable, UPPER_SNAKE' }),
    message: Type.String(),
  },
  { additionalProperties: true },
);
export type ErrorBody = Static<typeof ErrorSchema>;
