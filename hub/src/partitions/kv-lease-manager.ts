/**
 * Divides the EVENTS partitions (`events.<agent>.<partition>`) among the running hub workers with leases in a NATS KV
 * bucket, so that each partition is owned by at most one worker, a dead worker's partitions move to the others
 * within one lease TTL, and a new worker takes over its share.
 *
 * Bucket (default `hub-leases`, `replicas` 3, history 1): created with a TTL (`ttl` = the stream's max age =
 * `leaseTtlMs`), so an entry that is not rewritten expires on the server. A dead worker's leases and heartbeat
 * vanish by themselves; nothing has to clean up after a kill -9.
 *   `lease.<partition>` → `{ owner, acquiredAt }`  held by `owner` while present
 *   `worker.<id>`       → `{ workerId, startedAt, renewedAt, owned }`  the worker is live while present
 *
 * Protocol
 * - Acquire: `kv.create` (the server refuses it if the key exists: compare-and-set against "absent").
 * - Renew, every `renewEveryMs`, for the heartbeat (`kv.put`) and every lease held (`kv.update` with the revision
 *   of our last write: compare-and-set). A refused renewal means the entry expired or was taken; if the entry read
 *   back from the stream leader is still ours (our previous write landed but its reply was lost) we adopt its
 *   revision, otherwise the lease is lost: `onRelease(p, 'lost')` and it no longer counts as owned. A renewal that
 *   cannot reach the server is retried; if none has succeeded for `leaseTtlMs - renewEveryMs` (measured from when
 *   the last successful write was *sent*, so before the server can expire it), the lease is treated as lost too:
 *   `onRelease(p, 'lost')` starts at least `renewEveryMs` before another worker can acquire the partition.
 * - Give back (rebalance, stop): `onRelease` first (the caller snapshots and stops while the lease is still held and
 *   renewed), then the lease *message* is deleted by its revision (`$JS.API.STREAM.MSG.DELETE`). Deleting the exact
 *   message is conditional by construction (a newer owner's entry has another revision and is untouched) and, unlike
 *   `kv.delete`, leaves no tombstone: "subject has a message" ⇔ "key is held". That lets one stream-info request,
 *   answered by the stream leader (`subjects_filter`), give the whole picture each tick — which leases are held and
 *   which workers are live — without creating a consumer (as `kv.keys()` does) on every tick. Nothing watches this
 *   bucket, so the missing delete markers cost nothing.
 * - Fencing token: the revision (stream sequence) of the `create` that acquired the lease. It is stable while the
 *   lease is held and strictly larger for every later acquisition, by any worker (stream sequences only grow, as
 *   long as the bucket is not deleted and created again).
 *
 * Share (`planLeases`, pure): live workers = heartbeat keys present (plus ourselves), sorted. Each gets a quota of
 * floor(P/n) or ceil(P/n): the first P mod n in sorted order get the ceiling, so quotas sum to exactly P. (A bare
 * target of ceil(P/n) for everyone would leave workers idle as soon as n > P/2: 8 partitions over 5 workers could
 * settle at 2/2/2/2/0.) Every `rebalanceEveryMs`:
 * - more than quota: give back the excess, highest partition numbers first;
 * - fewer than quota: create free leases, starting at partition floor(rank·P/n) and wrapping, so workers that join
 *   together try different keys first;
 * - hysteresis: nothing moves while owned == quota. A partition free for more than two rebalance periods (so every
 *   worker under quota has had a tick to take it first) may be taken beyond quota, one per tick — no partition stays
 *   unowned when a live worker does not take its share (a worker whose heartbeat outlives it, or whose onAcquire
 *   keeps failing). Such extra leases are kept while the set of live workers stays the same; any membership change
 *   resets to the plain quota. Without this, the extra would be given back on the next tick and taken again two
 *   ticks later, for ever.
 *
 * Timing with defaults (TTL 15 s, renew 5 s, rebalance 2 s): a dead worker's leases and heartbeat (written in the
 * same renewal round) expire at most 15 s after its last renewal, plus the server's expiry check; the next rebalance
 * tick of each survivor (≤ 2 s later) sees the smaller membership and takes them: ≤ ~17 s, well under 30 s. (If the
 * heartbeat lingered, the long-free rule would still take them, one per worker per tick, after 4 s.) `stop()`
 * deletes its leases and heartbeat, so the others take over on their next tick (≤ 2 s).
 *
 * Handlers: for one partition, calls are serialized (a promise chain per partition) and paired — every
 * `onAcquire` is followed by exactly one `onRelease`, even when `onAcquire` rejected (then with 'rebalance' and the
 * lease is given back). Different partitions run concurrently. Renewals never wait for handlers.
 *
 * Assumes every worker uses the same bucket, partition count and `leaseTtlMs` (`start()` refuses a bucket whose TTL
 * differs), unique worker ids, and that the NATS servers' clocks agree to well within `renewEveryMs`. A restarted
 * worker does not adopt leases its previous incarnation left (it cannot tell them from a twin's); they expire.
 */
import {
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage, HubError, HubErrorCode } from '../errors.js';

export type ReleaseReason = 'rebalance' | 'stopping' | 'lost';

export interface LeaseHandlers {
  /** Called after a lease for `partition` was acquired; the caller restores state and starts consuming. Awaited before the partition counts as owned. */
  onAcquire(partition: number): Promise<void>;
  /** Called before a lease is given up (rebalance or stop) — the caller snapshots and stops — or after it was lost (renewal failed / taken: reason 'lost'). Awaited. */
  onRelease(partition: number, reason: ReleaseReason): Promise<void>;
}

export interface LeaseManagerOptions {
  /** Unique id of this worker (a KV key token: letters, digits, `-`, `_`, `/`, `=`, dots between tokens). */
  workerId: string;
  /** Number of partitions of the EVENTS stream; the same on every worker. */
  partitions: number;
  /** KV bucket of the leases. @default 'hub-leases' */
  bucket?: string;
  /** Replicas of the bucket when this worker creates it. @default 3 */
  replicas?: number;
  /** Age after which a lease or heartbeat not renewed expires (the bucket's TTL). @default 15000 */
  leaseTtlMs?: number;
  /** Interval of lease and heartbeat renewals; below leaseTtlMs / 2. @default leaseTtlMs / 3 */
  renewEveryMs?: number;
  /** Interval of the share check (acquire free leases, give back extras). @default 2000 */
  rebalanceEveryMs?: number;
}

export interface LeaseStatus {
  workerId: string;
  owned: number[];
  /** Workers with a heartbeat at the last rebalance tick (this one included), sorted. */
  liveWorkers: string[];
}

export const LEASE_DEFAULTS = { bucket: 'hub-leases', replicas: 3, leaseTtlMs: 15000, rebalanceEveryMs: 2000 } as const;

// ---------------------------------------------------------------------------------------------------------------
// The share decision (pure)

export interface LeasePlanInput {
  partitions: number;
  workerId: string;
  /** Workers whose heartbeat is present; this worker is added if missing. */
  liveWorkers: readonly string[];
  /** Partitions this worker holds and is not already giving back. */
  owned: readonly number[];
  /** Partitions no one holds. */
  free: readonly number[];
  /** Subset of `free` that has been free for more than two rebalance periods. */
  longFree?: readonly number[];
  /** Partitions above quota this worker may keep (taken while long free, under the current membership). @default 0 */
  allowance?: number;
}

export interface LeasePlan {
  /** This worker's fair share. */
  quota: number;
  /** Partitions to try to create leases for, in order of preference. */
  acquire: number[];
  /** Partitions to give back, highest first. */
  release: number[];
}

/** Quota of each live worker (sorted ids): floor(P/n), plus one for the first P mod n. */
export function leaseQuotas(partitions: number, liveWorkers: readonly string[]): Map<string, number> {
  const live = [...new Set(liveWorkers)].sort();
  const base = Math.floor(partitions / live.length);
  const extra = partitions % live.length;
  return new Map(live.map((id, rank) => [id, base + (rank < extra ? 1 : 0)]));
}

export function planLeases(input: LeasePlanInput): LeasePlan {
  const { partitions, workerId } = input;
  const live = [...new Set([...input.liveWorkers, workerId])].sort();
  const rank = live.indexOf(workerId);
  const quota = leaseQuotas(partitions, live).get(workerId) ?? 0;
  const owned = [...new Set(input.owned)].sort((a, b) => a - b);
  const allowance = Math.max(0, input.allowance ?? 0);

  if (owned.length > quota + allowance) {
    return { quota, acquire: [], release: owned.reverse().slice(0, owned.length - quota - allowance) };
  }
  const start = Math.floor((rank * partitions) / live.length);
  const ownedSet = new Set(owned);
  const free = [...new Set(input.free)]
    .filter((p) => p >= 0 && p < partitions && !ownedSet.has(p))
    .sort((a, b) => ((a - start + partitions) % partitions) - ((b - start + partitions) % partitions));
  const acquire = free.slice(0, Math.max(0, quota - owned.length));
  const longFree = new Set(input.longFree ?? []);
  const orphan = free.find((p) => longFree.has(p) && !acquire.includes(p));
  if (orphan !== undefined) acquire.push(orphan);
  return { quota, acquire, release: [] };
}

// ---------------------------------------------------------------------------------------------------------------
// The manager

interface LeaseValue {
  owner: string;
  acquiredAt: number;
}

/**
 * acquiring: lease held, onAcquire running; owned: onAcquire done; releasing: onRelease (rebalance/stopping)
 * queued or running, lease still held and renewed until it is deleted; lost: renewal refused or overdue.
 */
type SlotState = 'acquiring' | 'owned' | 'releasing' | 'lost';

interface Slot {
  readonly partition: number;
  state: SlotState;
  readonly value: string;
  readonly token: number;
  /** Revision of our last write of the lease entry. */
  revision: number;
  /** Clock time our last successful write was sent. */
  renewedAt: number;
  /** Set when the lease is about to be deleted: renewals stop. */
  closing: boolean;
  renewing: Promise<void> | undefined;
}

const WORKER_ID = /^[-/=\w]+(\.[-/=\w]+)*$/;

export class KvLeaseManager {
  private readonly workerId: string;
  private readonly partitions: number;
  private readonly bucket: string;
  private readonly stream: string;
  private readonly subjectPrefix: string;
  private readonly replicas: number;
  private readonly leaseTtlMs: number;
  private readonly renewEveryMs: number;
  private readonly rebalanceEveryMs: number;
  private readonly opTimeoutMs: number;
  private readonly log: Logger;

  /** Set by start(). `kvLeader` is bound without direct get: its reads are answered by the stream leader. */
  private handles: { kv: KV; kvLeader: KV; jsm: JetStreamManager } | undefined;

  private readonly slots = new Map<number, Slot>();
  private readonly chains = new Map<number, Promise<void>>();
  /** Clock time each free partition was first seen free (cleared when seen held). */
  private readonly freeSince = new Map<number, number>();
  private liveWorkers: string[] = [];
  private membership = '';
  private allowance = 0;
  private heartbeatRevision = 0;
  private startedAt = 0;

  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopping: Promise<void> | undefined;
  private rebalanceLoop: Promise<void> | undefined;
  private renewLoop: Promise<void> | undefined;
  private renewStopped = false;
  private readonly wakers = new Set<() => void>();
  private watchdog: NodeJS.Timeout | undefined;
  private readonly troubles = new Map<string, string>();

  constructor(
    private readonly nc: NatsConnection,
    options: LeaseManagerOptions,
    private readonly handlers: LeaseHandlers,
    log: Logger,
    private readonly clock: { now(): number } = { now: () => Date.now() },
  ) {
    const invalid = (message: string) => new HubError(HubErrorCode.CONFIG_INVALID, message);
    this.workerId = options.workerId;
    if (!WORKER_ID.test(this.workerId)) {
      throw invalid(`workerId must be a KV key token (letters, digits, -, _, /, =, dots between), got "${this.workerId}"`);
    }
    this.partitions = options.partitions;
    if (!Number.isInteger(this.partitions) || this.partitions < 1) {
      throw invalid(`partitions must be an integer >= 1, got ${this.partitions}`);
    }
    this.bucket = options.bucket ?? LEASE_DEFAULTS.bucket;
    if (!/^[-\w]+$/.test(this.bucket)) throw invalid(`bucket must match [-A-Za-z0-9_]+, got "${this.bucket}"`);
    this.stream = `KV_${this.bucket}`;
    this.subjectPrefix = `$KV.${this.bucket}.`;
    this.replicas = options.replicas ?? LEASE_DEFAULTS.replicas;
    this.leaseTtlMs = options.leaseTtlMs ?? LEASE_DEFAULTS.leaseTtlMs;
    if (!Number.isInteger(this.leaseTtlMs) || this.leaseTtlMs < 1000) {
      throw invalid(`leaseTtlMs must be an integer >= 1000, got ${this.leaseTtlMs}`);
    }
    this.renewEveryMs = options.renewEveryMs ?? Math.floor(this.leaseTtlMs / 3);
    if (!(this.renewEveryMs >= 100 && this.renewEveryMs < this.leaseTtlMs / 2)) {
      throw invalid(`renewEveryMs must be >= 100 and below leaseTtlMs / 2 (${this.leaseTtlMs / 2}), got ${this.renewEveryMs}`);
    }
    this.rebalanceEveryMs = options.rebalanceEveryMs ?? LEASE_DEFAULTS.rebalanceEveryMs;
    if (!(this.rebalanceEveryMs >= 10)) throw invalid(`rebalanceEveryMs must be >= 10, got ${this.rebalanceEveryMs}`);
    // A KV operation must not outlast a renewal period: a stuck request would delay the next renewal.
    this.opTimeoutMs = Math.min(5000, this.renewEveryMs);
    this.log = log.child({ component: 'leases', workerId: this.workerId, bucket: this.bucket });
  }

  /** Creates or opens the bucket, registers the heartbeat, and starts renewing and rebalancing. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error('KvLeaseManager.start() may be called once');
    const js = jetstream(this.nc, { timeout: this.opTimeoutMs });
    const jsm = await jetstreamManager(this.nc, { timeout: this.opTimeoutMs });
    // Workers that start together race to create the bucket; until its stream has a leader, requests about it go
    // unanswered. So each step is tried a few times before start() gives up.
    const kv = await this.startStep('create or open the lease bucket', async () => {
      const kv = await new Kvm(js).create(this.bucket, {
        replicas: this.replicas,
        history: 1,
        ttl: this.leaseTtlMs,
        description: 'Hub partition leases (lease.<partition>) and worker heartbeats (worker.<id>)',
      });
      const status = await kv.status();
      if (status.ttl !== this.leaseTtlMs) {
        throw new HubError(
          HubErrorCode.CONFIG_INVALID,
          `lease bucket "${this.bucket}" has a TTL of ${status.ttl} ms but leaseTtlMs is ${this.leaseTtlMs}: every hub ` +
            'worker must use the same leaseTtlMs (or delete the bucket while no worker runs)',
        );
      }
      if (status.history !== 1) this.log.warn({ history: status.history }, 'lease bucket keeps history; expected 1');
      return kv;
    });
    this.handles = { kv, jsm, kvLeader: await new Kvm(js).open(this.bucket) };
    this.startedAt = this.clock.now();
    await this.startStep('register the worker heartbeat', () => this.renewHeartbeat());
    if (this.state !== 'new') {
      // stop() was called while starting: leave nothing behind.
      await this.deleteHeartbeat();
      return;
    }
    this.state = 'running';
    this.watchdog = setInterval(() => this.checkDeadlines(), Math.max(50, Math.min(1000, Math.floor(this.renewEveryMs / 2))));
    this.watchdog.unref();
    this.renewLoop = this.runRenewals();
    this.rebalanceLoop = this.runRebalance();
    this.log.info(
      { partitions: this.partitions, leaseTtlMs: this.leaseTtlMs, renewEveryMs: this.renewEveryMs, rebalanceEveryMs: this.rebalanceEveryMs },
      'lease manager started',
    );
  }

  /** Gives back every lease (onRelease 'stopping', then delete) and the heartbeat, so others take over at once. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  owned(): number[] {
    const owned: number[] = [];
    for (const slot of this.slots.values()) if (isOwnedState(slot.state)) owned.push(slot.partition);
    return owned.sort((a, b) => a - b);
  }

  isOwner(partition: number): boolean {
    const slot = this.slots.get(partition);
    return slot !== undefined && isOwnedState(slot.state);
  }

  /**
   * Whether this worker holds the partition's lease now and may act as its owner: not lost, and the last successful
   * renewal was sent less than `leaseTtlMs - renewEveryMs` ago (the watchdog's deadline, so well before the server can
   * expire it). Unlike `isOwner` it does not wait for the watchdog: after a pause longer than that (GC, a frozen VM,
   * SIGSTOP) timers run in any order, and a write checked with this cannot follow another owner's.
   */
  holds(partition: number): boolean {
    const slot = this.slots.get(partition);
    return slot !== undefined && slot.state !== 'lost' && this.clock.now() - slot.renewedAt < this.leaseTtlMs - this.renewEveryMs;
  }

  /** Gives a lease up as lost (onRelease 'lost', then its entry is deleted if still ours), e.g. when its user was fenced. */
  abandon(partition: number, why: string): void {
    const slot = this.slots.get(partition);
    if (slot) this.markLost(slot, why);
  }

  token(partition: number): number | undefined {
    const slot = this.slots.get(partition);
    return slot !== undefined && isOwnedState(slot.state) ? slot.token : undefined;
  }

  status(): LeaseStatus {
    return { workerId: this.workerId, owned: this.owned(), liveWorkers: [...this.liveWorkers] };
  }

  // -- rebalancing --------------------------------------------------------------------------------------------

  private async runRebalance(): Promise<void> {
    while (this.state === 'running') {
      try {
        await this.rebalance();
        this.recovered('rebalance');
      } catch (error) {
        this.trouble('rebalance', error, 'lease rebalance failed; retrying on the next tick');
      }
      if (this.state === 'running') await this.sleep(this.rebalanceEveryMs);
    }
  }

  private async rebalance(): Promise<void> {
    const { held, workers } = await this.readView();
    if (this.state !== 'running') return;
    const now = this.clock.now();
    const free: number[] = [];
    const longFree: number[] = [];
    for (let p = 0; p < this.partitions; p++) {
      if (held.has(p) || this.slots.has(p)) {
        this.freeSince.delete(p);
        continue;
      }
      free.push(p);
      const since = this.freeSince.get(p);
      if (since === undefined) this.freeSince.set(p, now);
      else if (now - since > 2 * this.rebalanceEveryMs) longFree.push(p);
    }
    const live = [...new Set([...workers, this.workerId])].sort();
    const membership = live.join(',');
    if (membership !== this.membership) {
      if (this.membership !== '') this.log.info({ liveWorkers: live }, 'hub workers changed; rebalancing partitions');
      this.membership = membership;
      this.allowance = 0;
    }
    this.liveWorkers = live;
    const owned = this.plannedOwned();
    const plan = planLeases({
      partitions: this.partitions,
      workerId: this.workerId,
      liveWorkers: live,
      owned,
      free,
      longFree,
      allowance: this.allowance,
    });
    for (const p of plan.release) {
      const slot = this.slots.get(p);
      if (slot) this.release(slot, 'rebalance');
    }
    if (plan.acquire.length > 0) {
      await Promise.all(plan.acquire.map((p) => this.acquire(p)));
    }
    // Leases taken beyond quota (the only way to own more than quota after the plan) are kept while the membership
    // stays the same (see the header).
    this.allowance = Math.max(0, this.plannedOwned().length - plan.quota);
  }

  /** Held lease keys and live worker ids, in one request answered by the stream leader. */
  private async readView(): Promise<{ held: Set<number>; workers: string[] }> {
    const info = await this.io.jsm.streams.info(this.stream, { subjects_filter: `${this.subjectPrefix}>` });
    const held = new Set<number>();
    const workers: string[] = [];
    for (const subject of Object.keys(info.state.subjects ?? {})) {
      const key = subject.slice(this.subjectPrefix.length);
      if (key.startsWith('lease.')) {
        const p = Number(key.slice('lease.'.length));
        if (Number.isInteger(p)) held.add(p);
      } else if (key.startsWith('worker.')) {
        workers.push(key.slice('worker.'.length));
      }
    }
    return { held, workers };
  }

  private plannedOwned(): number[] {
    const owned: number[] = [];
    for (const slot of this.slots.values()) if (slot.state === 'acquiring' || slot.state === 'owned') owned.push(slot.partition);
    return owned;
  }

  private async acquire(partition: number): Promise<void> {
    const sentAt = this.clock.now();
    const value = JSON.stringify({ owner: this.workerId, acquiredAt: sentAt } satisfies LeaseValue);
    let revision: number;
    try {
      revision = await this.io.kv.create(leaseKey(partition), value);
    } catch (error) {
      if (isWrongLastSequence(error)) return; // taken by another worker first; the next tick sees it held
      // No answer: the create may still have landed. If the leader has our very entry, it is ours; otherwise the
      // next tick tries again (and a lease that landed unseen expires after the TTL).
      const entry = await this.io.kvLeader.get(leaseKey(partition)).catch(() => null);
      if (!entry || entry.operation !== 'PUT' || entry.string() !== value) {
        this.log.debug({ partition, err: errorMessage(error) }, 'lease create failed');
        return;
      }
      revision = entry.revision;
    }
    if (this.state !== 'running') {
      await this.deleteLeaseMessage(partition, revision);
      return;
    }
    const slot: Slot = { partition, state: 'acquiring', value, token: revision, revision, renewedAt: sentAt, closing: false, renewing: undefined };
    this.slots.set(partition, slot);
    this.freeSince.delete(partition);
    this.log.info({ partition, token: revision }, 'partition lease acquired');
    this.enqueue(partition, async () => {
      let failed = false;
      try {
        await this.handlers.onAcquire(partition);
      } catch (error) {
        failed = true;
        this.log.error({ partition, err: errorMessage(error) }, 'onAcquire failed; giving the lease back');
      }
      if (slot.state !== 'acquiring') return; // lost or stopping meanwhile: that path calls onRelease
      if (failed) this.release(slot, 'rebalance');
      else slot.state = 'owned';
    });
  }

  /** onRelease first (the lease is still held and renewed), then delete the lease so another worker can take it. */
  private release(slot: Slot, reason: 'rebalance' | 'stopping'): void {
    if (slot.state !== 'acquiring' && slot.state !== 'owned') return;
    slot.state = 'releasing';
    this.log.info({ partition: slot.partition, reason }, 'giving partition lease back');
    this.enqueue(slot.partition, async () => {
      try {
        await this.handlers.onRelease(slot.partition, reason);
      } catch (error) {
        this.log.error({ partition: slot.partition, reason, err: errorMessage(error) }, 'onRelease failed; giving the lease back anyway');
      }
      slot.closing = true;
      await slot.renewing;
      if (slot.state === 'releasing') await this.deleteLeaseMessage(slot.partition, slot.revision);
      this.dropSlot(slot);
    });
  }

  private markLost(slot: Slot, why: string): void {
    if (slot.state === 'lost') return;
    const previous = slot.state;
    slot.state = 'lost';
    this.log.warn({ partition: slot.partition, why }, 'partition lease lost');
    if (previous === 'releasing') return; // its onRelease is already queued; the delete is skipped
    this.enqueue(slot.partition, async () => {
      try {
        await this.handlers.onRelease(slot.partition, 'lost');
      } catch (error) {
        this.log.error({ partition: slot.partition, err: errorMessage(error) }, 'onRelease(lost) failed');
      }
      slot.closing = true;
      await slot.renewing;
      // If the lease was only overdue (server unreachable), our entry may still be there: free it at once if so.
      // Deleting by revision cannot touch another worker's entry.
      await this.deleteLeaseMessage(slot.partition, slot.revision);
      this.dropSlot(slot);
    });
  }

  private dropSlot(slot: Slot): void {
    if (this.slots.get(slot.partition) === slot) this.slots.delete(slot.partition);
  }

  private async deleteHeartbeat(): Promise<void> {
    if (this.heartbeatRevision === 0) return;
    try {
      await this.io.jsm.streams.deleteMessage(this.stream, this.heartbeatRevision, false);
    } catch (error) {
      if (!isNoMessage(error)) this.log.warn({ err: errorMessage(error) }, 'could not delete the heartbeat; it expires after the TTL');
    }
  }

  private async deleteLeaseMessage(partition: number, revision: number): Promise<void> {
    try {
      await this.io.jsm.streams.deleteMessage(this.stream, revision, false);
    } catch (error) {
      if (isNoMessage(error)) return; // already expired or replaced
      this.log.warn({ partition, err: errorMessage(error) }, 'could not delete the lease; it expires after the TTL');
    }
  }

  /** Handler calls for one partition run one after another, in the order they were queued. */
  private enqueue(partition: number, step: () => Promise<void>): void {
    const previous = this.chains.get(partition) ?? Promise.resolve();
    const next = previous.then(step).catch((error: unknown) => {
      this.log.error({ partition, err: errorMessage(error) }, 'lease step failed');
    });
    this.chains.set(partition, next);
    void next.then(() => {
      if (this.chains.get(partition) === next) this.chains.delete(partition);
    });
  }

  // -- renewals -----------------------------------------------------------------------------------------------

  private async runRenewals(): Promise<void> {
    while (!this.renewStopped) {
      await this.sleep(this.renewEveryMs);
      if (this.renewStopped) break;
      const renewals: Promise<void>[] = [this.renewHeartbeat().then(
        () => this.recovered('heartbeat'),
        (error: unknown) => this.trouble('heartbeat', error, 'heartbeat renewal failed; retrying'),
      )];
      for (const slot of this.slots.values()) {
        if (slot.closing || slot.state === 'lost' || slot.renewing) continue;
        const renewing = this.renew(slot).finally(() => {
          slot.renewing = undefined;
        });
        slot.renewing = renewing;
        renewals.push(renewing);
      }
      await Promise.all(renewals);
    }
  }

  private async renewHeartbeat(): Promise<void> {
    const now = this.clock.now();
    const value = { workerId: this.workerId, startedAt: this.startedAt, renewedAt: now, owned: this.owned() };
    this.heartbeatRevision = await this.io.kv.put(workerKey(this.workerId), JSON.stringify(value));
  }

  private async renew(slot: Slot): Promise<void> {
    const key = leaseKey(slot.partition);
    for (let attempt = 0; attempt < 2; attempt++) {
      const sentAt = this.clock.now();
      try {
        const revision = await this.io.kv.update(key, slot.value, slot.revision, this.opTimeoutMs);
        if (slot.state === 'lost') {
          // Declared lost (overdue) while this write was under way: do not keep a lease nobody serves.
          await this.deleteLeaseMessage(slot.partition, revision);
          return;
        }
        slot.revision = revision;
        slot.renewedAt = sentAt;
        this.recovered(`renew.${slot.partition}`);
        return;
      } catch (error) {
        if (!isWrongLastSequence(error)) {
          this.trouble(`renew.${slot.partition}`, error, 'lease renewal failed; retrying');
          return; // the watchdog declares it lost if this goes on
        }
      }
      // Refused: expired, taken, or our previous write landed but its reply was lost. Ask the leader.
      let entry;
      try {
        entry = await this.io.kvLeader.get(key);
      } catch (error) {
        this.trouble(`renew.${slot.partition}`, error, 'lease renewal refused and the lease could not be read; retrying');
        return;
      }
      if (entry && entry.operation === 'PUT' && entry.string() === slot.value) {
        slot.revision = entry.revision; // ours: adopt its revision and write again
        continue;
      }
      const owner = entry?.operation === 'PUT' ? safeOwner(entry.string()) : undefined;
      this.markLost(slot, owner ? `taken by ${owner}` : 'expired');
      return;
    }
  }

  /** A lease whose last successful renewal was sent leaseTtlMs - renewEveryMs ago may expire soon: give it up. */
  private checkDeadlines(): void {
    const now = this.clock.now();
    for (const slot of this.slots.values()) {
      if (slot.state === 'lost' || slot.closing) continue;
      if (now - slot.renewedAt >= this.leaseTtlMs - this.renewEveryMs) {
        this.markLost(slot, `not renewed for ${now - slot.renewedAt} ms`);
      }
    }
  }

  // -- stop ---------------------------------------------------------------------------------------------------

  private async shutdown(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    this.wakeAll();
    await this.rebalanceLoop;
    for (const slot of this.slots.values()) this.release(slot, 'stopping');
    while (this.chains.size > 0) await Promise.all(this.chains.values());
    this.renewStopped = true;
    this.wakeAll();
    await this.renewLoop;
    clearInterval(this.watchdog);
    await this.deleteHeartbeat();
    this.state = 'stopped';
    this.log.info('lease manager stopped');
  }

  // -- helpers ------------------------------------------------------------------------------------------------

  private async startStep<T>(what: string, step: () => Promise<T>): Promise<T> {
    const attempts = 5;
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (error) {
        if (attempt >= attempts || (error instanceof HubError && error.code === HubErrorCode.CONFIG_INVALID)) throw error;
        this.log.warn({ err: errorMessage(error), attempt, attempts }, `could not ${what}; trying again`);
        await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
      }
    }
  }

  private get io(): { kv: KV; kvLeader: KV; jsm: JetStreamManager } {
    if (!this.handles) throw new Error('KvLeaseManager is not started');
    return this.handles;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.wakers.add(done);
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** Logs a failure once at warn (and again when its message changes), repeats at debug. */
  private trouble(what: string, error: unknown, message: string): void {
    const err = errorMessage(error);
    if (this.troubles.get(what) === err) {
      this.log.debug({ what, err }, message);
    } else {
      this.troubles.set(what, err);
      this.log.warn({ what, err }, message);
    }
  }

  private recovered(what: string): void {
    if (this.troubles.delete(what)) this.log.info({ what }, 'lease operation works again');
  }
}

function isOwnedState(state: SlotState): boolean {
  return state === 'owned' || state === 'releasing';
}

function leaseKey(partition: number): string {
  return `lease.${partition}`;
}

function workerKey(workerId: string): string {
  return `worker.${workerId}`;
}

function isWrongLastSequence(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function isNoMessage(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.NoMessageFound;
}

function safeOwner(value: string): string | undefined {
  try {
    const owner = (JSON.parse(value) as Partial<LeaseValue>).owner;
    return typeof owner === 'string' ? owner : undefined;
  } catch {
    return undefined;
  }
}
