/**
 * The unforwarded dead letters, kept in memory as they are appended, so that forwarding them reads no payload back
 * from SQLite. Reading each batch back, and marking it letter by letter, cost the agent about a third of the CPU it
 * spent on bad input (benchmarks/bad-input.ts).
 *
 * The cache is either complete (it holds every unforwarded dead letter, oldest first) or not; when it is not, the
 * store answers from the table. It stops being complete when it would grow past its byte bound (the hub is away and
 * a backlog builds), when another process changed the table (the edge-dlq CLI), when the table's bound or a redrive
 * deleted dead letters, and at start when the table holds a backlog. It becomes complete again, empty, when the
 * table has no unforwarded dead letter left.
 */
import type { StoredDeadLetter } from './outbox.js';

export class UnforwardedDeadLetters {
  private letters: StoredDeadLetter[] = [];
  /** Index of the oldest letter still held: forwarding removes from the front. */
  private head = 0;
  private bytes = 0;
  private isComplete: boolean;

  constructor(
    private readonly maxBytes: number,
    complete: boolean,
  ) {
    this.isComplete = complete;
  }

  get complete(): boolean {
    return this.isComplete;
  }

  /** Dead letters just committed, with ascending ids above any held. */
  add(letters: StoredDeadLetter[]): void {
    if (!this.isComplete) return;
    for (const letter of letters) {
      this.letters.push(letter);
      this.bytes += letter.payload.byteLength;
    }
    if (this.bytes > this.maxBytes) this.invalidate();
  }

  /** The oldest `limit`, or undefined when the cache is not complete (ask the table). */
  oldest(limit: number): StoredDeadLetter[] | undefined {
    return this.isComplete ? this.letters.slice(this.head, this.head + limit) : undefined;
  }

  /** Those with ids first..last, or undefined when the cache is not complete. */
  between(first: number, last: number): StoredDeadLetter[] | undefined {
    if (!this.isComplete) return undefined;
    const found: StoredDeadLetter[] = [];
    for (let i = this.head; i < this.letters.length && this.letters[i]!.id <= last; i++) if (this.letters[i]!.id >= first) found.push(this.letters[i]!);
    return found;
  }

  /** Removes those with ids first..last: from the front, where batches leave (or anywhere, the slow way). */
  forwarded(first: number, last: number): void {
    if (this.head < this.letters.length && this.letters[this.head]!.id < first) {
      const kept = this.letters.slice(this.head).filter((l) => l.id < first || l.id > last);
      this.letters = kept;
      this.head = 0;
      this.bytes = kept.reduce((sum, l) => sum + l.payload.byteLength, 0);
      return;
    }
    while (this.head < this.letters.length && this.letters[this.head]!.id <= last) {
      this.bytes -= this.letters[this.head]!.payload.byteLength;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.letters.length) {
      this.letters = this.letters.slice(this.head);
      this.head = 0;
    }
  }

  /** The table changed in a way the cache cannot follow: the table answers until the backlog is gone. */
  invalidate(): void {
    this.letters = [];
    this.head = 0;
    this.bytes = 0;
    this.isComplete = false;
  }

  /** The table holds no unforwarded dead letter: the (empty) cache is complete again. */
  restart(): void {
    this.invalidate();
    this.isComplete = true;
  }
}
