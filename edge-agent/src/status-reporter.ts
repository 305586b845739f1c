/**
 * Tells the hub how this agent is doing: every `intervalMs` one JSON message on `status.<agentId>` (core NATS, not
 * stored: a missed report is replaced by the next) with the ingest counters, the outbox backlog and the dead
 * letters waiting. The hub's dashboard shows them per agent and its pipeline alerts notice a silent agent or a
 * filling outbox from them. Sent only while connected; a report that cannot be sent is simply skipped.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { agentStatusSubject, type AgentStatus } from '../../shared/wire.js';
import type { DeadLetterStore, Outbox } from './buffer/outbox.js';
import type { IngestCounters } from './ingest.js';
import type { PublisherStats } from './publisher/publisher.js';

export interface StatusSources {
  agentId: string;
  startedAt: number;
  outbox: Pick<Outbox, 'stats'>;
  deadLetters: Pick<DeadLetterStore, 'deadLetterStats'>;
  ingest: { counters: IngestCounters };
  publisher: { stats: PublisherStats };
  now: () => number;
}

export function agentStatus(sources: StatusSources): AgentStatus {
  const outbox = sources.outbox.stats();
  const letters = sources.deadLetters.deadLetterStats();
  const now = sources.now();
  return {
    agent: sources.agentId,
    at: now,
    startedAt: sources.startedAt,
    accepted: sources.ingest.counters.accepted,
    refused: sources.ingest.counters.rejected,
    published: sources.publisher.stats.eventsPublished,
    outbox: {
      rows: outbox.rows,
      bytes: outbox.bytes,
      maxBytes: outbox.maxBytes,
      oldestAgeMs: outbox.oldestAppendedAtMs === undefined ? null : Math.max(0, now - outbox.oldestAppendedAtMs),
    },
    deadLetters: { rows: letters.rows, unforwarded: letters.unforwarded },
    hubConnected: sources.publisher.stats.connected,
    process: processStats(),
  };
}

export function processStats(): AgentStatus['process'] {
  const cpu = process.cpuUsage();
  return { cpuSeconds: (cpu.user + cpu.system) / 1e6, rssBytes: process.memoryUsage.rss() };
}

export class StatusReporter {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sources: StatusSources,
    private readonly intervalMs: number,
  ) {}

  start(nc: Pick<NatsConnection, 'publish' | 'isClosed'>): void {
    this.stop();
    if (this.intervalMs <= 0) return;
    const subject = agentStatusSubject(this.sources.agentId);
    const send = () => {
      if (nc.isClosed()) return;
      try {
        nc.publish(subject, JSON.stringify(agentStatus(this.sources)));
      } catch {
        // Disconnected between the check and the publish: the next report follows.
      }
    };
    send();
    this.timer = setInterval(send, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
