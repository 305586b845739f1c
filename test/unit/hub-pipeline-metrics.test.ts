import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DashboardSnapshot } from '../../hub/src/dashboard/pipeline-observer.js';
import { metricSamples } from '../../hub/src/sinks/questdb-pipeline-metrics.js';

const snapshot = (over: Partial<DashboardSnapshot> = {}): DashboardSnapshot => ({
  at: 1_700_000_000_500,
  intervalMs: 1000,
  nats: { connected: true, server: 'n1' },
  edges: [
    { agent: 'gw-1', acceptedPerSec: 90, refusedPerSec: 10, publishedPerSec: 80, outboxRows: 5, outboxBytes: 500, outboxFill: 0.25, oldestAgeMs: 1500, deadLettersUnforwarded: 2, hubConnected: true, silentForMs: 300, cpuPercent: null, rssBytes: 1000 },
  ],
  stream: { name: 'EVENTS', messages: 10, bytes: 100, messagesPerSec: 3, nodes: [{ name: 'n1', role: 'leader', current: true, offline: false, lag: 0, activeAgoMs: 0 }, { name: 'n2', role: 'replica', current: false, offline: false, lag: 7, activeAgoMs: 900 }] },
  consumers: [{ name: 'hub-raw', pending: 4, ackPending: 1, redelivered: 0, ackedPerSec: 2.5 }],
  hub: { name: 'hub-a', eventsPerSec: 100, rowsPerSec: 99, deadLetteredPerSec: 0, flushFailuresPerSec: 0, latencyMs: null, cpuPercent: 12.5, rssBytes: 2000, heapUsedBytes: 1000 },
  questdb: { ok: false, latencyMs: null, error: 'down' },
  windows: null,
  alerts: null,
  quality: null,
  deadLetters: [],
  errors: {},
  ...over,
});

test('one sample per stage, subject and measure; booleans as 0/1; what is unknown gives no sample', () => {
  const samples = metricSamples(snapshot());
  const value = (stage: string, subject: string, metric: string) => samples.find((s) => s.stage === stage && s.subject === subject && s.metric === metric)?.value;
  assert.equal(value('edge', 'gw-1', 'accepted_per_s'), 90);
  assert.equal(value('edge', 'gw-1', 'error_ratio'), 0.1);
  assert.equal(value('edge', 'gw-1', 'outbox_oldest_age_s'), 1.5);
  assert.equal(value('edge', 'gw-1', 'hub_connected'), 1);
  assert.equal(value('edge', 'gw-1', 'cpu_percent'), undefined, 'no CPU before the second report');
  assert.equal(value('node', 'n2', 'current'), 0);
  assert.equal(value('node', 'n1', 'leader'), 1);
  assert.equal(value('consumer', 'hub-raw', 'pending'), 4);
  assert.equal(value('hub', 'hub-a', 'latency_p95_ms'), undefined, 'no latency without observations');
  assert.equal(value('questdb', 'questdb', 'up'), 0);
  assert.equal(value('questdb', 'questdb', 'ping_ms'), undefined);
  assert.ok(samples.every((s) => Number.isFinite(s.value)));
});

test('parts the snapshot could not fetch give no samples, the others still do', () => {
  const samples = metricSamples(snapshot({ stream: null, consumers: null, edges: [] }));
  assert.deepEqual([...new Set(samples.map((s) => s.stage))].sort(), ['hub', 'questdb']);
});
