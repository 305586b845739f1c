/**
 * `hub scale` (`node bin/hub.js scale --config hub.yaml`, `npm run hub:scale -- --config hub.yaml`): runs between scaling.minWorkers and
 * scaling.maxWorkers hub workers on this host with the same config, from consumer lag and ingest latency
 * (scale-supervisor.ts). SIGTERM/SIGINT stop every worker the way a worker stops (flush, ack, give partitions back).
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createLogger } from '../../../shared/logger.js';
import { natsAuthOptions } from '../../../shared/nats-auth.js';
import { EVENTS_STREAM } from '../../../shared/wire.js';
import { loadHubConfig } from '../config.js';
import { ConsumerLag } from './consumer-lag.js';
import { ScaleSupervisor } from './scale-supervisor.js';
import { WorkerPool } from './worker-pool.js';

const args = process.argv.slice(2).filter((arg) => arg !== 'scale');
const config = loadHubConfig(args);
const log = createLogger('hub-scale');
const nc = await connect({
  servers: config.nats.servers,
  name: `${config.nats.name}-scale`,
  maxReconnectAttempts: -1,
  ...natsAuthOptions(config.nats, config.nats.servers),
});
const jsm = await jetstreamManager(nc);
const lag = new ConsumerLag(
  jsm,
  EVENTS_STREAM,
  config.consumer.enabled ? config.consumer.durableName : undefined,
  config.analytics.enabled ? `${config.analytics.stateBucket}-p` : undefined,
);
let supervisor: ScaleSupervisor | undefined;
const pool = new WorkerPool({
  args,
  env: process.env,
  firstPort: config.scaling.firstWorkerPort,
  natsName: config.nats.name,
  workerIdPrefix: config.analytics.workerId,
  stopTimeoutMs: config.scaling.stopTimeoutMs,
  log,
  onUnexpectedExit: () => supervisor?.workerExited(),
});
supervisor = new ScaleSupervisor(pool, lag, config.scaling, log);

// Handlers first: a SIGTERM while the first workers start must still stop them (the pool starts nothing once closed).
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping every hub worker');
    void supervisor
      .stop()
      .then(() => nc.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          log.error({ err: String(error) }, 'stop failed');
          process.exit(1);
        },
      );
  });
}
const port = await supervisor.start(config.http.host, config.scaling.httpPort);
log.info({ port, min: config.scaling.minWorkers, max: config.scaling.maxWorkers }, 'hub scale running: /status and /metrics');
