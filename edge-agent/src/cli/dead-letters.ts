/**
 * edge-dlq: inspect and redrive an edge agent's dead letters, in its SQLite outbox file.
 *
 *   bin/edge-dlq.js [--config agent.yaml] list [--code CODE] [--limit N] [--json]
 *   bin/edge-dlq.js [--config agent.yaml] show <id> [--json]
 *   bin/edge-dlq.js [--config agent.yaml] redrive <id>... | --all [--code CODE] [--dry-run]
 *
 * The agent's own config (file and EDGE_* variables) names the file (`<dataDir>/outbox-<agentId>.db`, or --db),
 * the schemas and the partitions. Redrive validates each payload again with the current schemas (the schemas
 * folder plus the versions the agent learned from the hub's registry, cached in `<dataDir>/schema-cache`), and
 * moves those that now pass into the outbox: the dead letter is deleted and its events appended in one transaction
 * (a page of up to 500 dead letters per transaction). It works while the agent runs (SQLite WAL, busy timeout): the
 * running agent notices the change within deadLetters.forwardIntervalMs and publishes the events; a stopped
 * agent publishes them at its next start. The events keep their ids (the event_id, or the content hash), so the
 * hub stores each once.
 *
 * Exit codes: 0 done (redrive: every selected dead letter moved), 1 some still refused or not found, 2 bad usage.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../../../shared/config.js';
import { encodeEvent, partitionOf } from '../../../shared/wire.js';
import type { DeadLetterStore, OutboxEvent, Redrive, StoredDeadLetter } from '../buffer/outbox.js';
import { SqliteOutbox } from '../buffer/sqlite-outbox.js';
import { loadAgentConfig, type AgentConfig } from '../config.js';
import { EdgeErrorCode, OutboxFullError } from '../errors.js';
import { matchRoute } from '../sources/mqtt-source.js';
import { EventValidator, type EventContext, type Rejection } from '../validation/event-validator.js';
import { loadAgentCatalog, schemaCacheDir } from '../validation/kv-schema-watcher.js';

export interface CliOutput {
  out(line: string): void;
  err(line: string): void;
}

const stdio: CliOutput = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

const USAGE = `usage:
  edge-dlq [--config agent.yaml] [--db outbox.db] list [--code CODE] [--limit N] [--json]
  edge-dlq [--config agent.yaml] [--db outbox.db] show <id> [--json]
  edge-dlq [--config agent.yaml] [--db outbox.db] redrive <id>... | --all [--code CODE] [--dry-run]`;

/** Dead letters per redrive transaction: short transactions keep the running agent's commits flowing. */
const REDRIVE_PAGE = 500;

export async function main(argv: string[] = process.argv.slice(2), io: CliOutput = stdio): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        db: { type: 'string' },
        code: { type: 'string' },
        limit: { type: 'string' },
        all: { type: 'boolean' },
        json: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    io.err(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || command === undefined) {
    (values.help ? io.out : io.err)(USAGE);
    return values.help ? 0 : 2;
  }
  let config: AgentConfig;
  try {
    config = loadAgentConfig(values.config ? ['--config', values.config] : []);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.err(error.message);
    return 2;
  }
  const path = values.db ?? join(config.dataDir, `outbox-${config.agentId}.db`);
  if (!existsSync(path)) {
    io.err(`no outbox file at ${path} (agentId ${config.agentId}, dataDir ${config.dataDir}); pass --config or --db`);
    return 2;
  }
  const outbox = new SqliteOutbox({
    path,
    ...config.outbox,
    deadLetters: { maxRows: config.deadLetters.maxRows, maxBytes: config.deadLetters.maxBytes },
  });
  try {
    switch (command) {
      case 'list': {
        const limit = values.limit === undefined ? 50 : Number(values.limit);
        if (!Number.isInteger(limit) || limit < 1) {
          io.err(`--limit must be a positive integer, got ${values.limit}`);
          return 2;
        }
        list(outbox, { limit, ...(values.code ? { code: values.code } : {}), json: values.json === true }, io);
        return 0;
      }
      case 'show': {
        const id = Number(rest[0]);
        if (rest.length !== 1 || !Number.isInteger(id)) {
          io.err(`show takes one dead-letter id\n${USAGE}`);
          return 2;
        }
        return show(outbox, id, values.json === true, io);
      }
      case 'redrive': {
        const ids = rest.map(Number);
        if ((values.all === true) === ids.length > 0 || ids.some((id) => !Number.isInteger(id))) {
          io.err(`redrive takes dead-letter ids or --all\n${USAGE}`);
          return 2;
        }
        const { catalog } = loadAgentCatalog(config.schemasDir, schemaCacheDir(config.dataDir));
        const redriver = new Redriver(outbox, new EventValidator(catalog), config, () => Date.now() * 1000);
        const selection = values.all ? { all: true as const, ...(values.code ? { code: values.code } : {}) } : { ids };
        try {
          return printRedrive(redriver.run(selection, values['dry-run'] === true), values['dry-run'] === true, io);
        } catch (error) {
          if (!(error instanceof OutboxFullError)) throw error;
          io.err(`${error.message}: nothing more was redriven (pages already moved stay moved)`);
          return 1;
        }
      }
      default:
        io.err(`unknown command "${command}"\n${USAGE}`);
        return 2;
    }
  } finally {
    outbox.close();
  }
}

// --- list and show --------------------------------------------------------------------------------------------

function list(store: DeadLetterStore, query: { code?: string; limit: number; json: boolean }, io: CliOutput): void {
  const letters = store.listDeadLetters(query);
  if (query.json) {
    for (const letter of letters) io.out(JSON.stringify(letter));
    return;
  }
  const stats = store.deadLetterStats();
  io.out(`${stats.rows} dead letters (${stats.unforwarded} not yet forwarded to the hub, ${stats.bytes} payload bytes); newest first:`);
  io.out(['id'.padStart(7), 'at'.padEnd(24), 'fwd', 'source'.padEnd(8), 'code'.padEnd(28), 'origin'.padEnd(28), 'reason'].join('  '));
  for (const l of letters) {
    io.out(
      [
        String(l.id).padStart(7),
        new Date(l.at).toISOString().padEnd(24),
        l.forwardedAt === undefined ? 'no ' : 'yes',
        l.source.padEnd(8),
        l.code.padEnd(28),
        clip(l.origin ?? '-', 28).padEnd(28),
        clip(l.reason, 100),
      ].join('  '),
    );
  }
}

function show(store: DeadLetterStore, id: number, json: boolean, io: CliOutput): number {
  const letter = store.getDeadLetter(id);
  if (!letter) {
    io.err(`no dead letter ${id} (redriven, or dropped by the bound?)`);
    return 1;
  }
  const payload = Buffer.from(letter.payload);
  const text = asText(payload);
  if (json) {
    const { payload: _payload, ...rest } = letter;
    io.out(JSON.stringify({ ...rest, ...(text !== undefined ? { payloadText: text } : { payloadBase64: payload.toString('base64') }) }));
    return 0;
  }
  const field = (name: string, value: string) => io.out(`${name.padEnd(12)}${value}`);
  field('id', String(letter.id));
  field('at', new Date(letter.at).toISOString());
  field('source', letter.source);
  field('origin', letter.origin ?? '-');
  if (letter.defaultType !== undefined) field('type', `${letter.defaultType} (the source's default)`);
  field('code', letter.code);
  field('reason', letter.reason);
  field('forwarded', letter.forwardedAt === undefined ? 'not yet' : new Date(letter.forwardedAt).toISOString());
  field('payload', `${letter.bytes} bytes, ${text !== undefined ? 'text' : 'binary (hex)'}:`);
  io.out(text ?? hexDump(payload));
  return 0;
}

/** The payload as text when it is valid UTF-8 without control characters other than tab and line breaks. */
export function asText(payload: Buffer): string | undefined {
  const text = payload.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(payload)) return undefined;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) return undefined;
  return text;
}

/** `00000000  7b 22 61 22 ...  |{"a"...|`, 16 bytes a line. */
export function hexDump(payload: Buffer): string {
  const lines: string[] = [];
  for (let offset = 0; offset < payload.byteLength; offset += 16) {
    const chunk = payload.subarray(offset, offset + 16);
    const hex = [...chunk].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...chunk].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${offset.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join('\n');
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// --- redrive --------------------------------------------------------------------------------------------------

export type RedriveOutcome =
  | { id: number; status: 'redriven'; events: number; types: string[] }
  | { id: number; status: 'refused'; code: string; reason: string }
  | { id: number; status: 'missing' };

type Checked = Extract<RedriveOutcome, { status: 'refused' }> | (Extract<RedriveOutcome, { status: 'redriven' }> & { outboxEvents: OutboxEvent[] });

export type RedriveSelection = { ids: number[] } | { all: true; code?: string };

export class Redriver {
  constructor(
    private readonly store: DeadLetterStore,
    private readonly validator: EventValidator,
    private readonly config: Pick<AgentConfig, 'partitions' | 'sources'>,
    private readonly nowUs: () => number,
  ) {}

  /**
   * Validates the selected dead letters again and, unless `dryRun`, moves the ones that pass into the outbox.
   * Throws OutboxFullError when the outbox has no room (nothing of that page is moved).
   */
  run(selection: RedriveSelection, dryRun: boolean): RedriveOutcome[] {
    const outcomes: RedriveOutcome[] = [];
    const handle = (letters: StoredDeadLetter[]) => {
      const moves: Redrive[] = [];
      const pending = new Map<number, RedriveOutcome>();
      for (const letter of letters) {
        const checked = this.check(letter);
        if (checked.status === 'redriven') {
          const { outboxEvents, ...outcome } = checked;
          moves.push({ id: letter.id, events: outboxEvents });
          pending.set(letter.id, outcome);
        } else {
          pending.set(letter.id, checked);
        }
      }
      if (!dryRun && moves.length > 0) {
        const moved = new Set(this.store.redrive(moves));
        // A dead letter deleted between the read and the transaction (dropped by the bound) was not moved.
        for (const move of moves) if (!moved.has(move.id)) pending.set(move.id, { id: move.id, status: 'missing' });
      }
      outcomes.push(...pending.values());
    };
    if ('ids' in selection) {
      for (let i = 0; i < selection.ids.length; i += REDRIVE_PAGE) {
        const page = selection.ids.slice(i, i + REDRIVE_PAGE);
        const letters: StoredDeadLetter[] = [];
        for (const id of page) {
          const letter = this.store.getDeadLetter(id);
          if (letter) letters.push(letter);
          else outcomes.push({ id, status: 'missing' });
        }
        handle(letters);
      }
    } else {
      let afterId = 0;
      for (;;) {
        const letters = this.store.readDeadLetters({ afterId, limit: REDRIVE_PAGE, ...(selection.code ? { code: selection.code } : {}) });
        if (letters.length === 0) break;
        handle(letters);
        afterId = letters[letters.length - 1]!.id;
      }
    }
    return outcomes;
  }

  /** Validates one dead letter's payload as its source would (a JSON array: every element must pass). */
  check(letter: StoredDeadLetter): Checked {
    const refused = (rejection: Rejection): Checked => ({
      id: letter.id,
      status: 'refused',
      code: rejection.code,
      reason: rejection.field ? `${rejection.reason} (field ${rejection.field})` : rejection.reason,
    });
    const context = this.contextOf(letter);
    if ('refused' in context) return refused(context.refused);
    let value: unknown;
    try {
      value = JSON.parse(Buffer.from(letter.payload).toString('utf8'));
    } catch (error) {
      return refused({ code: EdgeErrorCode.MALFORMED_JSON, reason: `payload is not valid JSON: ${(error as Error).message}` });
    }
    const items = Array.isArray(value) ? value : [value];
    const ingestTimeUs = this.nowUs();
    const outboxEvents: OutboxEvent[] = [];
    const types = new Set<string>();
    for (const item of items) {
      const result = this.validator.validate(item, { ...context, ingestTimeUs });
      if (!result.ok) return refused(result.rejection);
      types.add(`${result.event.type} v${result.event.sv}`);
      outboxEvents.push({ partition: partitionOf(result.event.key, this.config.partitions), data: encodeEvent(result.event) });
    }
    return { id: letter.id, status: 'redriven', events: outboxEvents.length, types: [...types], outboxEvents };
  }

  /**
   * The context the source gave the event: stored with the dead letter when the agent recorded it; for older
   * rows, derived from the config (MQTT routes by topic, the HTTP default type).
   */
  private contextOf(letter: StoredDeadLetter): Omit<EventContext, 'ingestTimeUs'> | { refused: Rejection } {
    const context: Omit<EventContext, 'ingestTimeUs'> = { source: letter.source };
    if (letter.defaultType !== undefined || letter.expectedKey !== undefined) {
      return {
        ...context,
        ...(letter.defaultType !== undefined ? { defaultType: letter.defaultType } : {}),
        ...(letter.expectedKey !== undefined ? { expectedKey: letter.expectedKey } : {}),
      };
    }
    if (letter.source === 'mqtt' && letter.origin !== undefined) {
      const route = matchRoute(this.config.sources.mqtt.routes, letter.origin);
      if (!route) return { refused: { code: EdgeErrorCode.NO_ROUTE, reason: `no route for topic "${clip(letter.origin, 128)}"` } };
      return { ...context, defaultType: route.type, ...(route.key !== undefined ? { expectedKey: route.key } : {}) };
    }
    if (letter.source === 'http') return { ...context, defaultType: this.config.sources.http.defaultType };
    return context;
  }
}

function printRedrive(outcomes: RedriveOutcome[], dryRun: boolean, io: CliOutput): number {
  let moved = 0;
  let events = 0;
  for (const o of outcomes) {
    if (o.status === 'redriven') {
      moved++;
      events += o.events;
      io.out(`#${o.id} ${dryRun ? 'would be redriven' : 'redriven'}: ${o.events} event${o.events === 1 ? '' : 's'} (${o.types.join(', ')})`);
    } else if (o.status === 'refused') {
      io.out(`#${o.id} still refused: ${o.code} ${o.reason}`);
    } else {
      io.out(`#${o.id} not found (redriven already, or dropped by the bound)`);
    }
  }
  const verb = dryRun ? 'would move' : 'moved';
  io.out(`${verb} ${moved} of ${outcomes.length} dead letters (${events} events) into the outbox`);
  if (!dryRun && moved > 0) io.out('a running agent publishes them within deadLetters.forwardIntervalMs; a stopped one at its next start');
  return moved === outcomes.length ? 0 : 1;
}
