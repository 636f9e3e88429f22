/**
 * Crash points for the crash-safety tests: when FLASHSALE_FAULT names a point, the process kills itself there,
 * as a power cut would. Never set outside tests.
 */
/**
 * `after-sweep-step`: the sweeper released holds of a product it claimed and has not rescheduled it, nor the
 * other products of its claim (a take-over by another instance then waits for their lease).
 */
/** `after-move-out`: a move of stock left its source bucket (journaled) and has not reached its target. */
export type FaultPoint =
  'after-claim' | 'after-order-commit' | 'after-cancel-commit' | 'after-sweep-step' | 'after-move-out';

export function crashPoint(point: FaultPoint): void {
  if (process.env.FLASHSALE_FAULT === point) process.kill(process.pid, 'SIGKILL');
}
