/**
 * Where the worker's input comes from: decoded event batches, each carrying the way to settle its message.
 * Acks flow backward: the worker calls `ack()` only after the sink confirmed the batch's rows.
 */
import type { EventBatch } from '../../../shared/wire.js';

export type Inbound =
  | {
      type: 'batch';
      batch: EventBatch;
      /** Size of the message on the wire. */
      bytes: number;
      /** Stream sequence, for logs. */
      seq: number;
      redelivered: boolean;
      /** Messages the server still had for this consumer when it delivered this one (0: caught up). */
      pending: number;
      /** Done with it: it will not be delivered again. Only after its rows are durable. */
      ack(): void;
      /** Give it back for redelivery after `delayMs` (to this or another hub process). */
      nak(delayMs?: number): void;
    }
  | {
      /** A message that is not an event batch; the source already terminated it (it will not come back). */
      type: 'poison';
      bytes: number;
      seq: number;
      subject: string;
      error: string;
    };

export interface BatchSource extends AsyncIterable<Inbound> {
  /** Stops pulling; the iteration ends after the messages already received were yielded. */
  stop(): Promise<void>;
}
