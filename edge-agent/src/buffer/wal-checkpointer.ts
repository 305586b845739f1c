/**
 * Copies the outbox's WAL into its database from a worker thread with its own SQLite connection, so that the
 * checkpoint's page copying and fsyncs never stall the event loop that parses, validates and acknowledges.
 *
 * A PASSIVE checkpoint runs beside the writer without blocking it (SQLite WAL mode allows one checkpointer and one
 * writer at a time). With `synchronous=NORMAL` on this connection SQLite syncs the WAL before and the database after
 * copying, so the WAL is restarted only when the copied pages are durable. Until a checkpoint completes, the WAL
 * simply grows; the writer restarts it from the beginning after one has.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// An eval'd CommonJS worker: it needs no file of its own, so it runs the same from the sources (tsx) and from dist/.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.modulePath);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 1000');
db.pragma('synchronous = NORMAL');
const stopped = new Int32Array(workerData.shared);
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy: the next tick tries again */ }
}, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  try { db.close(); } finally {
    Atomics.store(stopped, 0, 1);
    Atomics.notify(stopped, 0);
    parentPort.close();
  }
});
`;

export class WalCheckpointer {
  private readonly worker: Worker;
  private readonly stopped = new Int32Array(new SharedArrayBuffer(4));
  private running = true;

  constructor(path: string, intervalMs: number) {
    const modulePath = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, modulePath, intervalMs, shared: this.stopped.buffer } });
    this.worker.unref();
    this.worker.on('error', () => {
      // A failed checkpointer only lets the WAL grow; the outbox stays correct. Nothing to do but stop waiting.
      Atomics.store(this.stopped, 0, 1);
    });
  }

  /**
   * Stops the thread and waits (synchronously, up to 5 s) until its connection is closed, so that the outbox's
   * own close is the last one and SQLite's closing checkpoint can run.
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.worker.postMessage('stop');
    Atomics.wait(this.stopped, 0, 0, 5000);
    void this.worker.terminate();
  }
}
