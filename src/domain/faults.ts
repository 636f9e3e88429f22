/**
 * Crash points for the crash-safety tests: when FLASHSALE_FAULT names a point, the process kills itself there,
 * as a power cut would. Never set outside tests.
 */
export type FaultPoint = 'after-claim' | 'after-order-commit' | 'after-cancel-commit';

export function crashPoint(point: FaultPoint): void {
  if (process.env.FLASHSALE_FAULT === point) process.kill(process.pid, 'SIGKILL');
}
