/**
 * Counts a source's refusals by code and logs them without letting a flood of bad clients flood the log: the
 * first refusal of a code is logged at once, later ones at most once per `intervalMs` with how many were
 * not logged in between (`suppressed`).
 */
import type { Logger } from '../../../shared/logger.js';
import type { EdgeErrorCode } from '../errors.js';

export class Refusals {
  private readonly counts = new Map<EdgeErrorCode, number>();
  private readonly lastLogged = new Map<EdgeErrorCode, { atMs: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 1000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Counts one refusal and logs it (warn), throttled per code. */
  refuse(code: EdgeErrorCode, fields: Record<string, unknown>, message: string): void {
    this.count(code);
    const now = this.now();
    const last = this.lastLogged.get(code);
    if (last && now - last.atMs < this.intervalMs) {
      last.suppressed++;
      return;
    }
    const suppressed = last?.suppressed ?? 0;
    this.lastLogged.set(code, { atMs: now, suppressed: 0 });
    this.log.warn({ code, ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, message);
  }

  /** Counts refusals that are reported elsewhere (dead letters, the HTTP response). */
  count(code: EdgeErrorCode, n = 1): void {
    this.counts.set(code, (this.counts.get(code) ?? 0) + n);
  }

  /** Refusals so far by code, e.g. `{ EDGE_ERR_AUTH_FAILED: 3 }` (for /metrics). */
  snapshot(): Partial<Record<EdgeErrorCode, number>> {
    return Object.fromEntries(this.counts);
  }
}
