import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PipelineAlertEvaluator } from '../../hub/src/alerting/pipeline-alert-rules.js';
import { deliveryOutcome, wantsAlert } from '../../hub/src/alerting/webhook-notifier.js';
import type { DashboardSnapshot, EdgeView } from '../../hub/src/dashboard/pipeline-observer.js';

const edge = (over: Partial<EdgeView> = {}): EdgeView => ({
  agent: 'gw-1', acceptedPerSec: 100, refusedPerSec: 0, publishedPerSec: 100, outboxRows: 0, outboxBytes: 0, outboxFill: 0,
  oldestAgeMs: null, deadLettersUnforwarded: 0, hubConnected: true, silentForMs: 100, cpuPercent: 1, rssBytes: 1, ...over,
});

const snapshot = (at: number, over: Partial<DashboardSnapshot> = {}): DashboardSnapshot => ({
  at,
  intervalMs: 1000,
  nats: { connected: true, server: 'n1' },
  edges: [edge()],
  stream: { name: 'EVENTS', messages: 0, bytes: 0, messagesPerSec: 0, nodes: [{ name: 'n1', role: 'leader', current: true, offline: false, lag: 0, activeAgoMs: 0 }] },
  consumers: [{ name: 'hub-raw', pending: 0, ackPending: 0, redelivered: 0, ackedPerSec: 0 }],
  hub: { name: 'hub-a', eventsPerSec: 0, rowsPerSec: 0, deadLetteredPerSec: 0, flushFailuresPerSec: 0, latencyMs: null, cpuPercent: 0, rssBytes: 0, heapUsedBytes: 0 },
  questdb: { ok: true, latencyMs: 1 },
  windows: null,
  alerts: null,
  quality: null,
  deadLetters: [],
  errors: {},
  ...over,
});

const thresholds = { consumerLagMessages: 1000, edgeSilentMs: 10_000, outboxFill: 0.8, edgeErrorRatio: 0.05, forMs: 3000 };

test('a condition is raised once, after it held for forMs, with the time it began; resolved when it clears', () => {
  const evaluator = new PipelineAlertEvaluator(thresholds);
  const lagging = (at: number) => snapshot(at, { consumers: [{ name: 'hub-raw', pending: 1500, ackPending: 10, redelivered: 0, ackedPerSec: 0 }] });
  assert.deepEqual(evaluator.evaluate(lagging(1000)), [], 'not yet: held 0 s');
  assert.deepEqual(evaluator.evaluate(lagging(3000)), [], 'not yet: held 2 s');
  const [raised, ...more] = evaluator.evaluate(lagging(4000));
  assert.deepEqual(more, []);
  assert.deepEqual({ rule: raised!.rule, key: raised!.key, ts: raised!.ts, severity: raised!.severity, state: raised!.details.state }, { rule: 'pipeline.consumer_lag', key: 'hub-raw', ts: 1000, severity: 'warning', state: 'firing' });
  assert.match(raised!.message, /1510 messages behind/);
  assert.deepEqual(evaluator.evaluate(lagging(5000)), [], 'once per episode');
  const [resolved] = evaluator.evaluate(snapshot(6000));
  assert.deepEqual({ rule: resolved!.rule, severity: resolved!.severity, ts: resolved!.ts, state: resolved!.details.state, lastedMs: resolved!.details.lastedMs }, { rule: 'pipeline.consumer_lag', severity: 'info', ts: 6000, state: 'resolved', lastedMs: 5000 });
  assert.deepEqual(evaluator.evaluate(snapshot(7000)), []);
});

test('a blip shorter than forMs raises nothing, and resolves nothing', () => {
  const evaluator = new PipelineAlertEvaluator(thresholds);
  assert.deepEqual(evaluator.evaluate(snapshot(1000, { questdb: { ok: false, latencyMs: null, error: 'refused' } })), []);
  assert.deepEqual(evaluator.evaluate(snapshot(2000)), []);
});

test('each kind of condition, per subject', () => {
  const evaluator = new PipelineAlertEvaluator({ ...thresholds, forMs: 0 });
  const alerts = evaluator.evaluate(
    snapshot(1000, {
      edges: [edge({ agent: 'quiet', silentForMs: 12_000, outboxFill: 0.99 }), edge({ agent: 'full', outboxFill: 0.9, outboxRows: 9 }), edge({ agent: 'noisy', acceptedPerSec: 90, refusedPerSec: 10 })],
      hub: { name: 'hub-a', eventsPerSec: 0, rowsPerSec: 0, deadLetteredPerSec: 2, flushFailuresPerSec: 0, latencyMs: null, cpuPercent: 0, rssBytes: 0, heapUsedBytes: 0 },
      questdb: { ok: false, latencyMs: null, error: 'connection refused' },
      stream: { name: 'EVENTS', messages: 0, bytes: 0, messagesPerSec: 0, nodes: [{ name: 'n2', role: 'replica', current: false, offline: false, lag: 40, activeAgoMs: 5000 }] },
    }),
  );
  assert.deepEqual(alerts.map((a) => `${a.rule} ${a.key} ${a.severity}`).sort(), [
    'pipeline.edge_errors noisy warning',
    'pipeline.edge_silent quiet critical',
    'pipeline.hub_errors hub-a warning',
    'pipeline.node_behind n2 warning',
    'pipeline.outbox_filling full warning',
    'pipeline.questdb_down questdb critical',
  ], "a silent agent's stale outbox is not reported");
});

test('webhooks: which alerts they want, and what an answer means', () => {
  const alert = (rule: string, severity: 'info' | 'warning' | 'critical') => ({ rule, severity });
  assert.equal(wantsAlert({ minSeverity: 'info', rules: [] }, alert('x', 'info')), true);
  assert.equal(wantsAlert({ minSeverity: 'warning', rules: [] }, alert('x', 'info')), false);
  assert.equal(wantsAlert({ minSeverity: 'warning', rules: ['pipeline.'] }, alert('pipeline.edge_silent', 'critical')), true);
  assert.equal(wantsAlert({ minSeverity: 'warning', rules: ['pipeline.'] }, alert('overheating', 'critical')), false);
  assert.deepEqual([200, 204, 400, 404, 408, 429, 500, 503, undefined].map(deliveryOutcome), ['delivered', 'delivered', 'refused', 'refused', 'retry', 'retry', 'retry', 'retry', 'retry']);
});
