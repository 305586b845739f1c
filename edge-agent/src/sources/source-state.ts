/**
 * Where a source remembers how far it got (file offsets, the last polled row), in a small JSON file in the
 * agent's data folder. A source saves only after the outbox commit of what it read, so after a crash it reads
 * again from the last committed position (at-least-once; QuestDB's dedup collapses the repeat) and never skips.
 *
 * Each save is atomic and durable: write a temporary file, fsync it, rename it over the old one, fsync the folder.
 * A crash leaves either the old or the new state, never a torn one.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { EdgeError, EdgeErrorCode } from '../errors.js';
import type { SourceDeps } from './source.js';

const STATE_VERSION = 1;

export class SourceState<Entry> {
  private entries: Map<string, Entry>;

  constructor(readonly path: string) {
    this.entries = new Map(Object.entries(readState<Entry>(path)));
  }

  get(key: string): Entry | undefined {
    return this.entries.get(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Changes the in-memory state; `save()` makes it durable. */
  set(key: string, entry: Entry): void {
    this.entries.set(key, entry);
  }

  delete(key: string): boolean {
    return this.entries.delete(key);
  }

  /** Atomic; `durable: false` skips the fsyncs (survives a process crash, maybe not a power loss). */
  save(durable = true): void {
    writeFileAtomic(this.path, JSON.stringify({ version: STATE_VERSION, entries: Object.fromEntries(this.entries) }, null, 1) + '\n', durable);
  }
}

/** `<dataDir>/source-state-<agentId>-<source>.json`; the agent passes dataDir and agentId to every source. */
export function stateFilePath(deps: SourceDeps, source: string): string {
  if (!deps.dataDir) throw new EdgeError(EdgeErrorCode.SOURCE_CONFIG, `source ${source} needs the agent's dataDir to remember its position`);
  return join(deps.dataDir, `source-state-${deps.agentId ?? 'edge'}-${source}.json`);
}

function readState<Entry>(path: string): Record<string, Entry> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as { version?: unknown; entries?: unknown };
    if (parsed.version !== STATE_VERSION || typeof parsed.entries !== 'object' || parsed.entries === null) {
      throw new Error(`expected {"version": ${STATE_VERSION}, "entries": {...}}`);
    }
    return parsed.entries as Record<string, Entry>;
  } catch (error) {
    // Never start over silently: that would read every file again from the start.
    throw new EdgeError(
      EdgeErrorCode.SOURCE_CONFIG,
      `source state file ${path} is unreadable (${(error as Error).message}); move it away to start from the configured startAt`,
    );
  }
}

/**
 * Replaces `path` with `text` so that a reader sees the old or the new content, never a mix. `durable: false`
 * skips the fsyncs: the file survives a crash of the process (the page cache does) but maybe not a power loss.
 */
export function writeFileAtomic(path: string, text: string, durable = true): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, text);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  if (!durable) return;
  // The rename is durable only once the folder entry is on disk.
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
