/** Small measuring tools shared by the benchmarks: percentiles, process CPU and memory from /proc, result files. */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';

/** Latency samples in ms, bounded: beyond `max` samples, reservoir sampling keeps a uniform subset. */
export class LatencyRecorder {
  private readonly samples: number[] = [];
  private seen = 0;
  constructor(private readonly max = 200_000) {}
  record(ms: number): void {
    this.seen++;
    if (this.samples.length < this.max) this.samples.push(ms);
    else {
      const slot = Math.floor(Math.random() * this.seen);
      if (slot < this.max) this.samples[slot] = ms;
    }
  }
  get count(): number {
    return this.seen;
  }
  percentiles(): { p50: number; p95: number; p99: number; max: number } {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
    return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN };
  }
}

export interface ProcessSample {
  cpuSeconds: number;
  rssBytes: number;
  peakRssBytes: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** CPU time (user + system) and memory of a process, read from /proc. */
export function sampleProcess(pid: number): ProcessSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { cpuSeconds, rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') };
}

/** Pids of the running processes whose command name is `name` (e.g. all nats-server nodes). */
export function pidsNamed(name: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** CPU seconds used so far by all of `pids` together (processes that exited count as 0). */
export function cpuSecondsOf(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += sampleProcess(pid).cpuSeconds;
    } catch {
      // exited
    }
  }
  return total;
}

export function machineDescription(): string {
  const cpu = cpus();
  return `${cpu.length} x ${cpu[0]?.model.trim() ?? 'cpu'}, Node ${process.version}, ${process.platform}-${process.arch}`;
}

export function writeResults(name: string, results: unknown): string {
  const dir = join(REPO_ROOT, 'benchmarks', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = join(dir, `${name}-${stamp}.json`);
  const text = JSON.stringify(results, null, 2);
  writeFileSync(file, text);
  writeFileSync(join(dir, `${name}-latest.json`), text);
  return file;
}

export function table(rows: Record<string, string | number>[]): string {
  const columns = Object.keys(rows[0] ?? {});
  const width = columns.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(width[i]!)).join(' | ')} |`;
  return [line(columns), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(columns.map((c) => String(r[c]))))].join('\n');
}
