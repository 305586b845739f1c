/**
 * Test-only fault injection (issue 6). `FAULT_HUB_KILL_AFTER_WRITE` makes the hub SIGKILL itself at the moment a
 * crash costs the most: QuestDB has confirmed a write, and the JetStream ack that the write allows is not sent yet.
 * A kill -9 from outside lands there only by chance; test/faults/hub-worker-faults.test.ts hits it on purpose, many
 * times. Unset (the default, and the only sane value in production) it costs one map lookup per flush.
 *
 * Not `HUB_*`: that prefix is for config fields, and the config loader refuses a variable that names none. Like the
 * other test knobs (`FAULT_OUTAGE_SECONDS`, `FAULT_NATS_ONLY`) it starts with `FAULT_`.
 *
 * Read once, when this module is loaded (at start). Comma-separated `<point>:<when>`:
 *
 *   point  raw                 HubWorker: a flush holding the rows of N messages succeeded; their acks are not sent
 *          checkpoint-written  PartitionProcessor checkpoint: the QuestDB flush of window results and alerts
 *                              succeeded; late events, alerts, the operator snapshot and the ack are not done yet
 *          checkpoint-saved    PartitionProcessor checkpoint: the snapshot is saved as well; the ack is not sent
 *   when   n (integer >= 1)    the n-th time this process reaches the point with something to ack
 *          p (0 < p < 1)       every time, with probability p
 *
 *   FAULT_HUB_KILL_AFTER_WRITE=raw:3
 *   FAULT_HUB_KILL_AFTER_WRITE=checkpoint-written:0.2,raw:0.05
 *
 * Before dying the process writes one JSON line to stderr, synchronously, so a test can tell this death from a crash:
 * `{"fault":"kill_after_write","point":"raw","count":3,"at":<epoch ms>,...detail}`.
 */
import { writeSync } from 'node:fs';

export const KILL_AFTER_WRITE_ENV = 'FAULT_HUB_KILL_AFTER_WRITE';
/**
 * `FAULT_HUB_MESSAGE_DELAY_MS=<ms>`: the raw path waits this long after each message, so one worker handles at most
 * 1000/ms messages per second. On a 2-core machine more processes cannot add CPU, so the scaling test
 * (test/integration/hub-scale.test.ts) gives each worker a fixed capacity this way, as if each had a machine of its
 * own: then adding workers adds capacity, and the supervisor's reaction to a load step can be shown.
 */
export const MESSAGE_DELAY_ENV = 'FAULT_HUB_MESSAGE_DELAY_MS';

export const FAULT_POINTS = ['raw', 'checkpoint-written', 'checkpoint-saved'] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

/** When to die at a point: at its n-th occurrence, or at each with a probability. */
export type KillWhen = { nth: number } | { probability: number };
export type KillPlan = Partial<Record<FaultPoint, KillWhen>>;

/** What the process writes to stderr right before it kills itself. */
export interface KillNotice {
  fault: 'kill_after_write';
  point: FaultPoint;
  /** How many times this process reached the point (this one included). */
  count: number;
  /** Epoch ms. */
  at: number;
  [detail: string]: unknown;
}

/** Parses the variable's value; undefined or empty is an empty plan. Throws with the offending part named. */
export function parseKillPlan(value: string | undefined): KillPlan {
  const plan: KillPlan = {};
  if (value === undefined || value.trim() === '') return plan;
  for (const part of value.split(',')) {
    const [point, when, extra] = part.trim().split(':');
    if (!FAULT_POINTS.includes(point as FaultPoint)) {
      throw new Error(`${KILL_AFTER_WRITE_ENV}: point must be one of ${FAULT_POINTS.join(', ')}, got "${point}" in "${part}"`);
    }
    const number = Number(when);
    if (extra !== undefined || when === undefined || when.trim() === '' || !Number.isFinite(number) || number <= 0 || (number >= 1 && !Number.isInteger(number))) {
      throw new Error(`${KILL_AFTER_WRITE_ENV}: "${part}" must be <point>:<n> (an integer >= 1) or <point>:<p> (0 < p < 1)`);
    }
    if (plan[point as FaultPoint]) throw new Error(`${KILL_AFTER_WRITE_ENV}: point ${point} given twice`);
    plan[point as FaultPoint] = number >= 1 ? { nth: number } : { probability: number };
  }
  return plan;
}

/** The variable's value in ms; 0 (no delay) when unset. Throws on anything but a number >= 0. */
export function parseMessageDelay(value: string | undefined): number {
  if (value === undefined || value.trim() === '') return 0;
  const ms = Number(value);
  if (!Number.isFinite(ms) || ms < 0) throw new Error(`${MESSAGE_DELAY_ENV}: must be a number of ms >= 0, got "${value}"`);
  return ms;
}

/** Writes the notice to stderr (synchronously: nothing runs after the signal) and sends SIGKILL to this process. */
function killSelf(notice: KillNotice): void {
  writeSync(2, `${JSON.stringify(notice)}\n`);
  process.kill(process.pid, 'SIGKILL');
}

export class FaultInjector {
  private readonly reached = new Map<FaultPoint, number>();

  constructor(
    private readonly plan: KillPlan,
    private readonly deps: { random: () => number; now: () => number; die: (notice: KillNotice) => void } = {
      random: Math.random,
      now: Date.now,
      die: killSelf,
    },
    /** Pause of the raw path after each message (FAULT_HUB_MESSAGE_DELAY_MS); 0: none. */
    readonly messageDelayMs = 0,
  ) {}

  /**
   * Call right after a write succeeded and before the acks it allows, only when there is something to ack. Kills
   * the process if the plan says so (and, with `die` replaced in unit tests, returns after reporting).
   */
  afterWrite(point: FaultPoint, detail: Record<string, unknown> = {}): void {
    const when = this.plan[point];
    if (!when) return;
    const count = (this.reached.get(point) ?? 0) + 1;
    this.reached.set(point, count);
    const fire = 'nth' in when ? count === when.nth : this.deps.random() < when.probability;
    if (fire) this.deps.die({ fault: 'kill_after_write', point, count, at: this.deps.now(), ...detail });
  }
}

/** The process-wide injector, from the environment at start. Does nothing unless the variable is set. */
export const processFaults = new FaultInjector(parseKillPlan(process.env[KILL_AFTER_WRITE_ENV]), undefined, parseMessageDelay(process.env[MESSAGE_DELAY_ENV]));
