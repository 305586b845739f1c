/**
 * Hub worker processes on this host, numbered 0..n-1 ("slots"), as `hub scale` wants them. Each is `bin/hub.js` with
 * the supervisor's own arguments (`--config ...`) and environment, plus per slot:
 *   HUB_HTTP__PORT             firstWorkerPort + slot (its /healthz, /metrics, dashboard)
 *   HUB_NATS__NAME             <nats.name>-w<slot>, so the server's connection list shows which worker is which
 *   HUB_ANALYTICS__WORKER_ID   <analytics.workerId>-w<slot>.<incarnation>: unique per process, as the leases require
 *   slots > 0: pipeline alerts and quality threshold alerts off, as these must run once (worker 0 is never removed).
 * Scaling down stops the highest slot with SIGTERM: the worker stops reading, flushes, acks and gives its partitions
 * back, so the others take them at once; it is killed only after `stopTimeoutMs`. A worker that exits on its own is
 * started again after a second (its leases expire or were given back; the others cover meanwhile).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../../shared/logger.js';

const HUB_BIN = fileURLToPath(new URL('../../../bin/hub.js', import.meta.url));
const RESTART_DELAY_MS = 1000;

export interface WorkerPoolOptions {
  args: string[];
  env: NodeJS.ProcessEnv;
  firstPort: number;
  natsName: string;
  workerIdPrefix: string;
  stopTimeoutMs: number;
  log: Logger;
  /** Called when a worker exits without being told to. */
  onUnexpectedExit?: (slot: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

interface Worker {
  slot: number;
  child: ChildProcess;
  startedAt: number;
  stopping: boolean;
  exited: Promise<void>;
}

export interface WorkerInfo {
  slot: number;
  pid: number | undefined;
  port: number;
  startedAt: number;
  stopping: boolean;
}

export class WorkerPool {
  private readonly workers = new Map<number, Worker>();
  private readonly incarnations = new Map<number, number>();
  private wantedCount = 0;
  private closed = false;

  constructor(private readonly options: WorkerPoolOptions) {}

  /** Workers the last scaleTo asked for (a dead one is started again up to this count). */
  get wanted(): number {
    return this.wantedCount;
  }

  /** Workers running or starting, not counting those being stopped. */
  get size(): number {
    return [...this.workers.values()].filter((w) => !w.stopping).length;
  }

  list(): WorkerInfo[] {
    return [...this.workers.values()]
      .sort((a, b) => a.slot - b.slot)
      .map((w) => ({ slot: w.slot, pid: w.child.pid, port: this.portOf(w.slot), startedAt: w.startedAt, stopping: w.stopping }));
  }

  portOf(slot: number): number {
    return this.options.firstPort + slot;
  }

  /** Starts the missing slots below n; stops (and waits for) the slots from n up. */
  async scaleTo(n: number): Promise<void> {
    // After close() (a stop that came while starting), nothing starts again.
    if (this.closed) n = 0;
    this.wantedCount = n;
    for (let slot = 0; slot < n; slot++) if (!this.workers.has(slot)) this.start(slot);
    const excess = [...this.workers.values()].filter((w) => w.slot >= n);
    await Promise.all(excess.map((w) => this.stopWorker(w)));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.scaleTo(0);
  }

  private start(slot: number): void {
    const incarnation = (this.incarnations.get(slot) ?? 0) + 1;
    this.incarnations.set(slot, incarnation);
    const env: NodeJS.ProcessEnv = {
      ...this.options.env,
      HUB_HTTP__PORT: String(this.portOf(slot)),
      HUB_NATS__NAME: `${this.options.natsName}-w${slot}`,
      HUB_ANALYTICS__WORKER_ID: `${this.options.workerIdPrefix}-w${slot}.${incarnation}`,
    };
    if (slot > 0) {
      env.HUB_ALERTING__PIPELINE__ENABLED = 'false';
      env.HUB_QUALITY__ALERTS__ENABLED = 'false';
    }
    const child = spawn(process.execPath, [HUB_BIN, ...this.options.args], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    const worker: Worker = {
      slot,
      child,
      startedAt: Date.now(),
      stopping: false,
      exited: new Promise<void>((resolve) => child.once('exit', () => resolve())),
    };
    this.workers.set(slot, worker);
    this.options.log.info({ slot, pid: child.pid, port: this.portOf(slot) }, 'hub worker started');
    child.once('exit', (code, signal) => {
      if (this.workers.get(slot) === worker) this.workers.delete(slot);
      if (worker.stopping) {
        this.options.log.info({ slot, pid: child.pid, code, signal }, 'hub worker stopped');
        return;
      }
      this.options.log.error({ slot, pid: child.pid, code, signal }, 'hub worker exited unexpectedly; starting it again');
      this.options.onUnexpectedExit?.(slot, code, signal);
      setTimeout(() => {
        if (!this.closed && slot < this.wantedCount && !this.workers.has(slot)) this.start(slot);
      }, RESTART_DELAY_MS).unref();
    });
  }

  private async stopWorker(worker: Worker): Promise<void> {
    if (!worker.stopping) {
      worker.stopping = true;
      worker.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        this.options.log.warn({ slot: worker.slot, pid: worker.child.pid }, 'hub worker did not stop in time; killing it');
        worker.child.kill('SIGKILL');
      }, this.options.stopTimeoutMs);
      void worker.exited.then(() => clearTimeout(timer));
    }
    await worker.exited;
  }
}
