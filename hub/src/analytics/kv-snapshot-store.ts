/**
 * Operator snapshots per partition in a NATS KV bucket (`hub-operator-state`, 3 replicas, key `p<partition>`).
 *
 * Every save is a compare-and-swap on the revision this worker last read or wrote. That makes the snapshot its own
 * fence: a worker that lost its partition (lease expired while it was paused, say) fails its next save and stops,
 * instead of overwriting the new owner's state and acking messages the new owner has not covered.
 *
 * Values are msgpack (smaller than JSON for window states); a snapshot must fit one NATS message (max_payload).
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { Packr } from 'msgpackr';
import { HubError, HubErrorCode } from '../errors.js';
import type { OperatorSetSnapshot } from './operator-set.js';

export const OPERATOR_STATE_BUCKET = 'hub-operator-state';

export interface PartitionState {
  /** Incremented by each new owner: names its JetStream consumer (`hub-analytics-p<N>-g<generation>`). */
  generation: number;
  /** Who wrote it (worker id), for status pages. */
  owner: string;
  savedAt: number;
  operators: OperatorSetSnapshot | null;
}

export interface SnapshotStore {
  /** The partition's state and its revision (0 when there is none yet). */
  load(partition: number): Promise<{ state: PartitionState | undefined; revision: number }>;
  /** Saves if the stored revision is still `revision`; returns the new revision; throws PARTITION_FENCED otherwise. */
  save(partition: number, state: PartitionState, revision: number): Promise<number>;
}

const packr = new Packr({ useRecords: false, moreTypes: false });

export class KvSnapshotStore implements SnapshotStore {
  private kv: Promise<KV> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: { bucket?: string; replicas: number },
  ) {}

  private bucket(): Promise<KV> {
    this.kv ??= new Kvm(this.nc)
      .create(this.options.bucket ?? OPERATOR_STATE_BUCKET, { replicas: this.options.replicas, history: 1 })
      .catch((error: unknown) => {
        this.kv = undefined;
        throw error;
      });
    return this.kv;
  }

  async load(partition: number): Promise<{ state: PartitionState | undefined; revision: number }> {
    const entry = await (await this.bucket()).get(key(partition));
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return { state: undefined, revision: entry?.revision ?? 0 };
    return { state: packr.unpack(entry.value) as PartitionState, revision: entry.revision };
  }

  async save(partition: number, state: PartitionState, revision: number): Promise<number> {
    const kv = await this.bucket();
    const data = packr.pack(state);
    try {
      // Revision 0: nobody wrote it yet (create fails if someone just did); a deleted key is also created anew.
      return revision === 0 ? await kv.create(key(partition), data) : await kv.update(key(partition), data, revision);
    } catch (error) {
      const message = (error as Error).message ?? '';
      if (/wrong last sequence|key exists|10071/i.test(message)) {
        throw new HubError(HubErrorCode.PARTITION_FENCED, `partition ${partition}: another worker saved its state (revision moved past ${revision})`, { cause: error });
      }
      throw error;
    }
  }
}

function key(partition: number): string {
  return `p${partition}`;
}
