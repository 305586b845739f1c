import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig } from '../../shared/config.js';
import { agentConfigSchema } from '../../edge-agent/src/config.js';

const example = fileURLToPath(new URL('../../edge-agent/config.example.yaml', import.meta.url));
const load = (path?: string, env: Record<string, string> = {}) => {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    return loadConfig<Record<string, unknown>>(agentConfigSchema, { ...(path ? { path } : {}), envPrefix: 'EDGE_', what: 'edge agent' });
  } finally {
    process.env = saved;
  }
};

test('the example config file states exactly the defaults', () => {
  const fromFile = load(example);
  const defaults = load();
  delete fromFile.agentId;
  delete defaults.agentId;
  assert.deepEqual(fromFile, defaults);
});

test('environment variables override fields at any depth, parsed as JSON', () => {
  const config = load(undefined, { EDGE_SOURCES__HTTP__PORT: '8081', EDGE_NATS__SERVERS: '["nats://h:4222"]', EDGE_AGENTID: 'gw-1' });
  assert.equal((config.sources as { http: { port: number } }).http.port, 8081);
  assert.deepEqual((config.nats as { servers: string[] }).servers, ['nats://h:4222']);
  assert.equal(config.agentId, 'gw-1');
});

test('a bad config names every wrong field', () => {
  assert.throws(
    () => load(undefined, { EDGE_SOURCES__MQTT__PORT: '70000', EDGE_OUTBOX__FULLPOLICY: 'drop', EDGE_AGENTID: 'has space' }),
    (error: Error) =>
      error instanceof ConfigError &&
      /config\.sources\.mqtt\.port must be <= 65535/.test(error.message) &&
      /config\.outbox\.fullPolicy must be one of "reject", "drop-oldest"/.test(error.message) &&
      /config\.agentId must match pattern/.test(error.message),
  );
  assert.throws(() => load(undefined, { EDGE_NOPE: '1' }), /EDGE_NOPE: no config field "NOPE"/);
});
