/**
 * Hub entry point; only wires: config, NATS, streams, consumer, QuestDB tables and sink, schema registry (publish at
 * start, watch and look up while running), DLQ, worker, status server.
 * `node bin/hub.js --config hub.yaml` (or `npm run hub`). SIGTERM/SIGINT: stop consuming, flush and ack what is
 * buffered, drain NATS, exit 0.
 */
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ConfigError } from '../../shared/config.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { natsAuthOptions } from '../../shared/nats-auth.js';
import { loadSchemaCatalog } from '../../shared/schema-catalog.js';
import { loadCompatModes } from '../../shared/schema-compat.js';
import { EVENTS_STREAM, type EventBatch } from '../../shared/wire.js';
import { loadHubConfig, type HubConfig } from './config.js';
import { ensureDurableConsumer, JetStreamBatchSource } from './consumer/jetstream-consumer.js';
import { errorMessage, isPermanent } from './errors.js';
import { healthOf, startStatusServer, type StatusServerOptions } from './http-status-server.js';
import { startObservability, type Observability } from './observability.js';
import { ensureRollups, rollupSpecs } from './sinks/questdb-rollups.js';
import { HubWorker, systemClock, type WorkerStatus } from './hub-worker.js';
import { HubMetrics } from './metrics.js';
import { createQuestDbSink } from './sinks/questdb-sink.js';
import { QuestDbRest } from './sinks/questdb-rest.js';
import { RowMappings } from './sinks/questdb-rows.js';
import { ensureTables, reservedTableWarnings, tableSpecs } from './sinks/questdb-tables.js';
import { JetStreamDeadLetterSink } from './sinks/jetstream-dead-letter-sink.js';
import { KvSchemaRegistry, KvSchemaWatch } from './kv-schema-registry.js';
import { openSchemaBucket, planSchemas, publishSchemas, SCHEMA_REFUSED, type SchemaPlan } from './schema-publisher.js';
import { RegistrySchemaResolver, StaticSchemaResolver, type SchemaResolver } from './schema-resolver.js';
import { ensureStreams, streamSpecs } from './streams.js';
import { UnmappedEvents } from './unmapped-events.js';
import { AnalyticsService } from './analytics/analytics-service.js';
import { PipelineAlerts } from './alerting/pipeline-alerts.js';
import { EdgeRefusalsConsumer } from './quality/edge-refusals.js';
import { QualityAlertChecker } from './quality/quality-alerts.js';
import { QualityRulesPublisher } from './quality/quality-rules-publisher.js';
import { isQualityRule } from './quality/quality-rules.js';
import { recommendationsRoutes } from './recommendations/infrastructure/http-routes.js';
import { openCatalogue, RecommendationsService } from './recommendations/infrastructure/recommendations-service.js';
import { catalogueEnricher } from './recommendations/infrastructure/catalogue-enricher.js';
import { publishRuleFiles } from './rules/index.js';
import { JetStreamAlertSink } from './sinks/jetstream-alert-sink.js';
import { createQuestDbAnalyticsSink, type QuestDbAnalyticsSink } from './sinks/questdb-analytics-sink.js';

class ShutdownRequested extends Error {}

const startingStatus: WorkerStatus = {
  state: 'starting',
  lastFlush: undefined,
  failingSince: undefined,
  bufferedRows: 0,
  heldMessages: 0,
  unresolvedMessages: 0,
};

/** The worker part of /healthz in a process without the raw path (consumer.enabled=false), once analytics runs. */
const analyticsOnlyStatus: WorkerStatus = { ...startingStatus, state: 'running' };

/** Retries a start-up step with backoff until it succeeds, fails permanently, or shutdown is requested. */
async function retrying<T>(what: string, step: () => Promise<T>, signal: AbortSignal, log: Logger): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    if (signal.aborted) throw new ShutdownRequested(what);
    try {
      return await step();
    } catch (error) {
      if (isPermanent(error)) throw error;
      const delayMs = Math.min(10_000, 500 * 2 ** Math.min(attempt, 5));
      log.warn({ step: what, attempt: attempt + 1, retryInMs: delayMs, err: errorMessage(error) }, 'start-up step failed; retrying');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
      });
    }
  }
}

function watchConnection(nc: NatsConnection, log: Logger): { connected(): boolean } {
  let connected = true;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') {
        connected = false;
        log.warn({ server: status.server }, 'nats disconnected');
      } else if (status.type === 'reconnect') {
        connected = true;
        log.info({ server: status.server }, 'nats reconnected');
      } else if (status.type === 'error' || status.type === 'slowConsumer') {
        log.warn({ status }, 'nats status');
      }
    }
  })();
  return { connected: () => connected && !nc.isClosed() };
}

function startStatsLog(worker: HubWorker, intervalMs: number, log: Logger): () => void {
  if (intervalMs <= 0) return () => undefined;
  let last = { ...worker.stats, at: Date.now() };
  const timer = setInterval(() => {
    const now = Date.now();
    const stats = worker.stats;
    const seconds = Math.max(0.001, (now - last.at) / 1000);
    const status = worker.status();
    log.info(
      {
        eventsPerSec: Math.round((stats.events - last.events) / seconds),
        rowsPerSec: Math.round((stats.rowsWritten - last.rowsWritten) / seconds),
        messagesPerSec: Math.round((stats.messages - last.messages) / seconds),
        flushes: stats.flushes - last.flushes,
        state: status.state,
        bufferedRows: status.bufferedRows,
        heldMessages: status.heldMessages,
        totals: stats,
      },
      'hub stats',
    );
    last = { ...stats, at: now };
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

async function main(): Promise<number> {
  let config: HubConfig;
  try {
    config = loadHubConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const log = createLogger('hub');
  const shutdown = new AbortController();
  let worker: HubWorker | undefined;
  let analytics: AnalyticsService | undefined;
  let qualityRules: QualityRulesPublisher | undefined;
  let qualityAlerts: QualityAlertChecker | undefined;
  let qualityAlertOutbox: PipelineAlerts | undefined;
  let edgeRefusals: EdgeRefusalsConsumer | undefined;
  let recommendations: RecommendationsService | undefined;
  let stopCatalogue = (): void => undefined;
  let analyticsSink: QuestDbAnalyticsSink | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down: stop consuming, flush, ack, drain');
    // Last resort if something does not settle (unacked messages are redelivered after ack_wait anyway).
    setTimeout(() => {
      log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs + 5000).unref();
    shutdown.abort();
    void worker?.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  // Schemas first: a catalogue the hub cannot map is a deployment error, found before touching any server. Versions
  // incompatible with the one before them are left out (and logged once the registry was read, below).
  const folder = loadSchemaCatalog(config.schemasDir);
  const compatModes = loadCompatModes(config.schemasDir);
  let schemaPlan: SchemaPlan = planSchemas(folder, [], compatModes);
  tableSpecs(schemaPlan.catalog);

  const nc = await connect({
    servers: config.nats.servers,
    name: config.nats.name,
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    // No stack trace captured per request (every KV put of the recommendations is one): measured 11% of its CPU.
    noAsyncTraces: true,
    // Notice a frozen server in 3-4.5 s (missed pings) and move to another node; the default takes 2 minutes.
    pingInterval: 1500,
    maxPingOut: 2,
    ...natsAuthOptions(config.nats, config.nats.servers),
  });
  log.info({ server: nc.getServer() }, 'nats connected');
  const connection = watchConnection(nc, log);

  let exitCode = 0;
  let stopStats = (): void => undefined;
  let statusServer: Awaited<ReturnType<typeof startStatusServer>> | undefined;
  let schemaWatch: KvSchemaWatch | undefined;
  const metrics = new HubMetrics(undefined, { defaultMetrics: true });
  const analyticsOnly = !config.consumer.enabled;
  if (analyticsOnly && !config.analytics.enabled && !config.recommendations.enabled) {
    process.stderr.write('consumer.enabled, analytics.enabled and recommendations.enabled are all false: this hub would do nothing\n');
    return 2;
  }
  const statusOptions: StatusServerOptions = {
    host: config.http.host,
    port: config.http.port,
    registry: metrics.registry,
    health: () => ({
      ...healthOf(connection.connected(), worker?.status() ?? (analyticsOnly && (analytics || recommendations) ? analyticsOnlyStatus : startingStatus)),
      ...(analytics ? { analytics: analytics.status() } : {}),
      ...(recommendations ? { recommendations: recommendations.status() } : {}),
    }),
  };
  let observability: Observability | undefined;
  try {
    // Up before the start-up steps, so an orchestrator sees 503 "starting" rather than a closed port.
    if (config.http.port > 0) {
      statusServer = await startStatusServer(statusOptions);
      log.info({ host: config.http.host, port: statusServer.port }, 'status server listening (/healthz, /metrics)');
    }
    const jsm: JetStreamManager = await retrying('jetstream', () => jetstreamManager(nc), shutdown.signal, log);
    const consumerOptions = {
      stream: EVENTS_STREAM,
      durableName: config.consumer.durableName,
      ackWaitMs: config.consumer.ackWaitMs,
      maxAckPendingMessages: config.consumer.maxAckPendingMessages,
    };
    const ensureJetStream = async (): Promise<void> => {
      await ensureStreams(jsm, streamSpecs(config.streams), log);
      // The durable right after the stream: with interest retention, a stream without consumers keeps nothing.
      await ensureDurableConsumer(jsm, consumerOptions, log);
    };
    await retrying('streams and consumer', ensureJetStream, shutdown.signal, log);

    if (config.schemaRegistry.enabled) {
      const { bucket, replicas } = config.schemaRegistry;
      const publish = async () => publishSchemas(await openSchemaBucket(jetstream(nc), bucket, replicas), folder, compatModes, log);
      schemaPlan = await retrying('schema registry', publish, shutdown.signal, log);
    } else {
      for (const r of schemaPlan.refused) log.error({ code: SCHEMA_REFUSED, type: r.type, version: r.version, reasons: r.reasons }, `schema version refused: ${r.reasons.join('; ')}`);
    }
    // The registry's versions are mapped too (another hub may have published newer ones). Versions published
    // while this hub runs are learned by the schema resolver below (watch, and lookup when an event needs one).
    const catalog = schemaPlan.catalog;
    const mappings = new RowMappings(catalog);
    const tables = tableSpecs(catalog);
    log.info({ schemasDir: config.schemasDir, schemaVersions: mappings.size, tables: tables.map((t) => t.table) }, 'schema catalogue loaded');
    for (const warning of reservedTableWarnings(tables)) log.error(warning);

    const questdb = {
      httpUrl: config.questdb.httpUrl,
      username: config.questdb.username,
      password: config.questdb.password,
    };
    const rest = new QuestDbRest({ ...questdb, timeoutMs: config.questdb.requestTimeoutMs });
    await retrying('questdb tables', () => ensureTables(rest, tables, log), shutdown.signal, log);
    const statusServerNow = statusServer;
    observability = await retrying(
      'dashboard, pipeline metrics and alerts',
      () => startObservability(config, { nc, jsm, metrics, rest, questdb, status: statusServerNow && { options: statusOptions, port: statusServerNow.port }, log }),
      shutdown.signal,
      log,
    );
    const sink = analyticsOnly ? undefined : await retrying(
      'questdb sender',
      () =>
        createQuestDbSink({
          ...questdb,
          requestTimeoutMs: config.questdb.requestTimeoutMs,
          retryTimeoutMs: config.questdb.retryTimeoutMs,
          mappings,
          nowMicros: () => Date.now() * 1000,
          log,
        }),
      shutdown.signal,
      log,
    );

    let resolver: SchemaResolver = new StaticSchemaResolver(mappings);
    if (config.schemaRegistry.enabled) {
      const registry = new KvSchemaRegistry(jetstream(nc), config.schemaRegistry.bucket);
      const learning = new RegistrySchemaResolver({
        catalog,
        modes: compatModes,
        mappings,
        registry,
        migrateTables: (specs) => ensureTables(rest, specs, log),
        missingTtlMs: config.schemaRegistry.missingTtlMs,
        clock: systemClock,
        log,
        metrics,
      });
      resolver = learning;
      if (config.schemaRegistry.watch) {
        schemaWatch = new KvSchemaWatch(registry, (entry) => learning.offer(entry), { retryMs: config.schemaRegistry.retryMs, log });
        schemaWatch.start();
      }
    } else {
      metrics.schemaVersions.set(mappings.size);
    }
    const deadLetters = new JetStreamDeadLetterSink(jetstream(nc), {
      hubName: config.nats.name,
      publishTimeoutMs: config.deadLetters.publishTimeoutMs,
      maxInFlight: config.deadLetters.maxInFlight,
      clock: systemClock,
    });

    if (sink) {
      const source = new JetStreamBatchSource(jetstream(nc), {
        stream: EVENTS_STREAM,
        durableName: config.consumer.durableName,
        pullMaxMessages: config.consumer.pullMaxMessages,
        pullExpiresMs: Math.max(1000, Math.min(30_000, Math.floor(config.consumer.ackWaitMs / 2))),
        log,
        recover: ensureJetStream,
      });
      worker = new HubWorker(
        source,
        sink,
        { ...config.sink, shutdownTimeoutMs: config.shutdownTimeoutMs },
        { metrics, log, unmapped: new UnmappedEvents(resolver, deadLetters) },
      );
    }
    if (config.analytics.enabled) {
      const { rulesDir, rulesBucket, replicas } = config.analytics;
      const report = await retrying('rule files', () => publishRuleFiles(nc, rulesDir, { bucket: rulesBucket, replicas, log }), shutdown.signal, log);
      log.info({ created: report.created.length, updated: report.updated.length, kept: report.kept.length, refused: report.refused.length }, 'rule files published');
      if (config.quality.enabled) {
        // Before the analytics start, so the partitions take the quality rules from their first message on.
        const publisher = new QualityRulesPublisher(nc, { schemasDir: config.schemasDir, reloadIntervalMs: config.quality.reloadIntervalMs, bucket: rulesBucket, replicas, log });
        await retrying('quality rules', () => publisher.start(), shutdown.signal, log);
        qualityRules = publisher;
      }
      analyticsSink = await retrying(
        'questdb analytics tables',
        () =>
          createQuestDbAnalyticsSink({
            ...questdb,
            requestTimeoutMs: config.questdb.requestTimeoutMs,
            retryTimeoutMs: config.questdb.retryTimeoutMs,
            nowMicros: () => Date.now() * 1000,
            log,
          }),
        shutdown.signal,
        log,
      );
      const alertStream = new JetStreamAlertSink(jetstream(nc), config.deadLetters.publishTimeoutMs);
      let enrich: ((batch: EventBatch) => number) | undefined;
      if (config.analytics.catalogueEnrichment) {
        const catalogue = await retrying('catalogue for the rules', () => openCatalogue(nc, config.recommendations, log), shutdown.signal, log);
        stopCatalogue = () => catalogue.stop();
        enrich = catalogueEnricher(catalogue);
        log.info({ products: catalogue.size() }, 'rules see app events with their catalogue product');
      }
      const outputs = analyticsSink;
      analytics = await retrying(
        'analytics',
        async () => {
          // A fresh service per attempt: a half-started one (rule watch running, bucket missing) is stopped first.
          const attempt = new AnalyticsService(nc, jetstream(nc), jsm, config.analytics, outputs, deadLetters, alertStream, log, enrich, (rule) => config.quality.enabled || !isQualityRule(rule));
          try {
            await attempt.start();
            return attempt;
          } catch (error) {
            await attempt.stop().catch(() => undefined);
            throw error;
          }
        },
        shutdown.signal,
        log,
      );
      log.info({ workerId: config.analytics.workerId, partitions: config.analytics.partitions }, 'analytics running');
      if (config.quality.enabled && config.quality.edgeRefusals) {
        const consumer = new EdgeRefusalsConsumer(jetstream(nc), jsm, outputs, log);
        await retrying('edge refusals consumer', () => consumer.start(), shutdown.signal, log);
        edgeRefusals = consumer;
      }
      if (qualityRules && config.quality.alerts.enabled) {
        const rules = qualityRules;
        const outbox = new PipelineAlerts({ evaluate: () => [] }, alertStream, outputs, log);
        qualityAlertOutbox = outbox;
        qualityAlerts = new QualityAlertChecker({ rest, thresholds: () => rules.alertThresholds(), raise: (alerts) => outbox.raise(alerts), evaluateIntervalMs: config.quality.alerts.evaluateIntervalMs, log });
        qualityAlerts.start();
      }
    }
    if (config.recommendations.enabled) {
      const rowsTarget = { ...questdb, requestTimeoutMs: config.questdb.requestTimeoutMs, rest };
      recommendations = await retrying('recommendations', () => RecommendationsService.start(nc, jetstream(nc), jsm, config.recommendations, log, rowsTarget), shutdown.signal, log);
      if (statusServer) {
        const service = recommendations;
        const api = recommendationsRoutes(service.useCases, (id, limit) => service.recommend(id, limit));
        const others = statusOptions.routes;
        statusOptions.routes = (request, response, path) => api(request, response, path) || (others?.(request, response, path) ?? false);
      }
    }
    if (config.rollups.enabled) {
      // After the analytics tables (the alerts rollups read them); QuestDB fills new views in the background.
      const rollups = rollupSpecs(undefined, { refreshEveryMinutes: config.rollups.refreshEveryMinutes });
      await retrying('questdb rollups', () => ensureRollups(rest, rollups, log), shutdown.signal, log);
    }
    if (worker) {
      stopStats = startStatsLog(worker, config.logIntervalMs, log);
      if (shutdown.signal.aborted) await worker.stop();
      log.info({ durable: config.consumer.durableName, ...config.sink }, 'hub consuming');
      await worker.run();
    } else {
      log.info('raw events are written by other hub processes (consumer.enabled=false); this one runs the analytics and recommendations only');
      await new Promise<void>((resolve) => (shutdown.signal.aborted ? resolve() : shutdown.signal.addEventListener('abort', () => resolve(), { once: true })));
    }
    // Analytics and recommendations give their partitions up (last checkpoint each) so other workers take them over at once.
    await qualityAlerts?.stop();
    await qualityAlertOutbox?.drain();
    await qualityRules?.stop();
    await analytics?.stop();
    await edgeRefusals?.stop();
    stopCatalogue();
    await recommendations?.stop();
    await analyticsSink?.close();
    await schemaWatch?.stop();
    await sink?.close();
    log.info({ totals: worker?.stats }, 'hub stopped');
  } catch (error) {
    if (!(error instanceof ShutdownRequested)) {
      log.fatal({ err: errorMessage(error), code: (error as { code?: unknown }).code }, 'hub failed');
      exitCode = 1;
    }
  } finally {
    stopStats();
    await observability?.stop();
    await schemaWatch?.stop();
    await statusServer?.close();
    await nc.drain().catch(() => undefined);
  }
  return exitCode;
}

process.exitCode = await main();
