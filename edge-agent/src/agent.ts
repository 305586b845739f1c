/** Wires one edge agent: sources → ingest (validation, outbox commit) → publisher → hub. */
import type { Server } from 'node:http';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import type { Logger } from '../../shared/logger.js';
import { natsAuthOptions } from '../../shared/nats-auth.js';
import { startAdminServer } from './admin-server.js';
import { StatusReporter } from './status-reporter.js';
import { DeadLetterForwarder } from './buffer/jetstream-dead-letter-forwarder.js';
import { PreAggregation } from './aggregation/pre-aggregation.js';
import { SqliteWindowStore } from './aggregation/sqlite-window-store.js';
import { SqliteOutbox } from './buffer/sqlite-outbox.js';
import type { AgentConfig } from './config.js';
import { IngestPipeline } from './ingest.js';
import { JetStreamPublisher } from './publisher/jetstream-publisher.js';
import { sources, type Source, type SourceName } from './sources/index.js';
import { EventValidator } from './validation/event-validator.js';
import { KvSchemaWatcher, loadAgentCatalog, schemaCacheDir } from './validation/kv-schema-watcher.js';

export class EdgeAgent {
  private nc: NatsConnection | undefined;
  private status: StatusReporter | undefined;
  private readonly startedAt = Date.now();
  private outbox: SqliteOutbox | undefined;
  private ingest: IngestPipeline | undefined;
  private publisher: JetStreamPublisher | undefined;
  private validator: EventValidator | undefined;
  private schemaWatcher: KvSchemaWatcher | undefined;
  private deadLetters: DeadLetterForwarder | undefined;
  private admin: Server | undefined;
  private readonly running: Source[] = [];
  private stopped = false;

  constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const { config, log } = this;
    // The local schemas plus the versions learned from the hub's registry before, so validation works offline.
    const schemas = loadAgentCatalog(config.schemasDir, schemaCacheDir(config.dataDir));
    for (const version of schemas.conflicts) log.warn({ version }, 'cached registry schema differs from the local one; using the local one');
    for (const file of schemas.skipped) log.warn({ file }, 'unreadable cached schema skipped');
    const validator = new EventValidator(schemas.catalog, { maxFutureMs: config.validation.maxFutureMs });
    this.validator = validator;
    log.info({ schemasDir: config.schemasDir, versions: validator.versions() }, 'schemas loaded');
    this.outbox = new SqliteOutbox({
      path: join(config.dataDir, `outbox-${config.agentId}.db`),
      ...config.outbox,
      deadLetters: { maxRows: config.deadLetters.maxRows, maxBytes: config.deadLetters.maxBytes },
    });
    const outbox = this.outbox;
    const aggregation = config.aggregation.some((rule) => rule.mode !== 'raw')
      ? {
          pre: new PreAggregation(config.aggregation, new SqliteWindowStore(outbox.database), config.agentId, config.partitions),
          runInTransaction: (work: () => void) => outbox.database.transaction(work)(),
          idleCheckMs: 1000,
        }
      : undefined;
    this.ingest = new IngestPipeline(validator, this.outbox, config.partitions, log, undefined, aggregation);
    const publisher = new JetStreamPublisher(this.outbox, { agentId: config.agentId, ...config.publisher }, log);
    this.publisher = publisher;
    this.ingest.onCommitted(() => publisher.notify());
    const { forward, forwardBatch, forwardBatchBytes, forwardIntervalMs, maxForwardPayloadBytes } = config.deadLetters;
    this.deadLetters = new DeadLetterForwarder(
      this.outbox,
      {
        agentId: config.agentId,
        forward,
        batchSize: forwardBatch,
        maxBatchBytes: forwardBatchBytes,
        intervalMs: forwardIntervalMs,
        maxPayloadBytes: maxForwardPayloadBytes,
        publishTimeoutMs: config.publisher.publishTimeoutMs,
        retryInitialMs: config.publisher.retryInitialMs,
        retryMaxMs: config.publisher.retryMaxMs,
      },
      log,
      // Events redriven by the edge-dlq CLI (another process) would otherwise wait for the next ingest commit.
      () => publisher.notify(),
    );
    this.deadLetters.start();
    // The agent takes events even when the hub is unreachable (a gateway booting without uplink): sources start
    // now, and the publisher starts once the first connection succeeds; until then events wait in the outbox.
    void this.connectToHub(publisher);
    for (const name of Object.keys(sources) as SourceName[]) {
      const sourceConfig = config.sources[name];
      if (!sourceConfig.enabled) continue;
      const source = (sources[name] as (c: typeof sourceConfig, d: object) => Source)(sourceConfig, {
        ingest: this.ingest,
        log: log.child({ source: name }),
        dataDir: config.dataDir,
        agentId: config.agentId,
      });
      await source.start();
      this.running.push(source);
    }
    if (config.admin.port > 0) {
      this.admin = await startAdminServer(
        {
          agentId: config.agentId,
          outbox: this.outbox,
          ingest: this.ingest,
          publisher: this.publisher,
          deadLetters: { store: this.outbox, forwarder: this.deadLetters },
          schemas: { validator, watcher: () => this.schemaWatcher },
          sources: this.running,
        },
        config.admin.host,
        config.admin.port,
      );
    }
    log.info({ agentId: config.agentId, outbox: this.outbox.stats() }, 'edge agent started');
  }

  private async connectToHub(publisher: JetStreamPublisher): Promise<void> {
    const { config, log } = this;
    try {
      const nc = await connect({
        servers: config.nats.servers,
        name: `edge-agent-${config.agentId}`,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        waitOnFirstConnect: true,
        // A frozen server (stopped process, half-open TCP) keeps the socket open: only missed pings reveal it. The
        // default (2 min) stalled publishing for the whole freeze in the SIGSTOP fault test; this moves to another
        // node after 3-4.5 s.
        pingInterval: 1500,
        maxPingOut: 2,
        // Replies (PubAcks, the schema watch) under a prefix of this agent's own: its NATS user may subscribe nowhere else.
        inboxPrefix: config.nats.inboxPrefix ?? `_INBOX_${config.agentId}`,
        ignoreClusterUpdates: config.nats.ignoreDiscoveredServers,
        // No stack trace captured per request: when dead letters still travelled one per PubAck request, building those
        // Errors took about 8% of the agent's CPU with a tenth of the input bad (benchmarks/bad-input.ts).
        noAsyncTraces: true,
        ...natsAuthOptions(config.nats, config.nats.servers),
      });
      if (this.stopped) {
        await nc.close();
        return;
      }
      this.nc = nc;
      log.info({ server: nc.getServer() }, 'connected to the hub');
      void this.watchConnection(nc);
      publisher.start(jetstream(nc));
      this.deadLetters?.connect(jetstream(nc));
      if (this.outbox && this.ingest) {
        const outbox = this.outbox;
        this.status = new StatusReporter(
          { agentId: config.agentId, startedAt: this.startedAt, outbox, deadLetters: outbox, ingest: this.ingest, publisher, now: Date.now },
          config.nats.statusIntervalMs,
        );
        this.status.start(nc);
      }
      if (config.schemaRegistry.enabled && this.validator) {
        const { bucket, retryMs } = config.schemaRegistry;
        this.schemaWatcher = new KvSchemaWatcher(this.validator, nc, { bucket, retryMs, cacheDir: schemaCacheDir(config.dataDir) }, log);
        this.schemaWatcher.start();
      }
    } catch (error) {
      log.error({ err: error }, 'cannot connect to the hub; events stay in the outbox');
    }
  }

  /** Graceful stop: sources first (no new input), then pending commits, then in-flight publishes. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const source of this.running.splice(0)) await source.stop().catch((e: Error) => this.log.warn({ err: e.message }, 'source stop failed'));
    await this.ingest?.close();
    await this.publisher?.stop(this.config.shutdownTimeoutMs);
    await this.deadLetters?.stop(this.config.shutdownTimeoutMs);
    await this.schemaWatcher?.stop();
    await new Promise<void>((resolve) => (this.admin ? this.admin.close(() => resolve()) : resolve()));
    this.status?.stop();
    await this.nc?.drain().catch(() => undefined);
    this.outbox?.close();
    this.log.info('edge agent stopped');
  }

  private async watchConnection(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect') this.log.info({ status: status.type, server: status.server }, 'hub connection');
    }
  }
}
