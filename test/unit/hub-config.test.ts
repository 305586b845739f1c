import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, validateConfig } from '../../shared/config.js';
import { checkHubConfig, hubConfigSchema, loadHubConfig, type HubConfig } from '../../hub/src/config.js';
import { streamDiff, streamSpecs } from '../../hub/src/streams.js';

function withEnv<T>(vars: Record<string, string>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('defaults point at the local stack and the brief\'s batching', () => {
  const config = loadHubConfig([]);
  assert.deepEqual(config.nats.servers, ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223', 'nats://127.0.0.1:4224']);
  assert.equal(config.questdb.httpUrl, 'http://127.0.0.1:9000');
  assert.equal(config.consumer.durableName, 'hub-raw');
  assert.equal(config.consumer.ackWaitMs, 30000);
  assert.equal(config.sink.maxRows, 50000);
  assert.equal(config.sink.flushIntervalMs, 250);
  assert.equal(config.streams.replicas, 3);
  assert.equal(config.streams.duplicateWindowMs, 120000);
  assert.equal(config.http.port, 8090);
  assert.equal(config.nats.user, undefined);
});

test('HUB_ environment variables override fields', () => {
  const config = withEnv({ HUB_NATS__SERVERS: '["nats://h:1"]', HUB_SINK__MAX_ROWS: '1000', HUB_HTTP__PORT: '0' }, () => loadHubConfig([]));
  assert.deepEqual(config.nats.servers, ['nats://h:1']);
  assert.equal(config.sink.maxRows, 1000);
  assert.equal(config.http.port, 0);
});

test('every field has a default and a description, and unknown fields are refused', () => {
  const visit = (node: Record<string, unknown>, path: string): void => {
    for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) {
      const where = `${path}.${name}`;
      assert.ok(typeof child.description === 'string', `${where} has a description`);
      // Credentials, the files that hold them and the optional product catalogue file have no default: unset means none.
      const optional = ['user', 'pass', 'username', 'password', 'nkeySeedFile', 'tls', 'caFile', 'certFile', 'keyFile', 'catalogueFile'].includes(name);
      if (!optional) assert.ok('default' in child, `${where} has a default`);
      if (child.type === 'object') {
        assert.equal(child.additionalProperties, false, `${where} refuses unknown fields`);
        visit(child, where);
      }
    }
  };
  visit(hubConfigSchema as unknown as Record<string, unknown>, 'config');
  assert.throws(() => validateConfig(hubConfigSchema, { sink: { maxRow: 5 } }, 'hub'), /config.sink.maxRow is not an allowed field/);
});

test('refuses a hold time that JetStream\'s ack_wait would cut short', () => {
  const config = validateConfig<HubConfig>(hubConfigSchema, { consumer: { ackWaitMs: 10000 } }, 'hub');
  assert.throws(() => checkHubConfig(config), (error: unknown) => error instanceof ConfigError && /holdOnFailureMs/.test(error.message));
});

test('EVENTS refuses publishes when full; a stream with the same config needs no update', () => {
  const config = validateConfig<HubConfig>(hubConfigSchema, {}, 'hub');
  const [events, dlq] = streamSpecs(config.streams);
  assert.equal(events?.discard, 'new');
  assert.equal(events?.duplicate_window, 120_000_000_000);
  assert.equal(dlq?.retention, 'limits');
  assert.ok(events);
  assert.deepEqual(streamDiff(events, { ...events, sealed: false }), []);
  assert.deepEqual(streamDiff(events, { ...events, num_replicas: 1, subjects: ['events.>'] }), ['num_replicas']);
});
