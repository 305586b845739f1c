/**
 * The example monitoring in deploy/ (Prometheus scrape config, alert rules, Grafana dashboard) against the code: every
 * metric, label and job a query names must be one the hub's and the agent's registries really have, and each query
 * must parse as PromQL (a small parser of the subset we use; no Prometheus binary needed).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { parse as parseYaml } from 'yaml';
import { createMetricsRegistry, type AdminDeps } from '../../edge-agent/src/admin-server.js';
import { HubMetrics } from '../../hub/src/metrics.js';

const deployFile = (path: string): string => fileURLToPath(new URL(`../../deploy/${path}`, import.meta.url));
const readYaml = (path: string): unknown => parseYaml(readFileSync(deployFile(path), 'utf8'));

// ---------------------------------------------------------------------------------------------------------------
// The metrics the processes register, by name, with their type, labels and the job that scrapes them.

type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary';
interface KnownMetric {
  type: MetricType;
  labels: ReadonlySet<string>;
  /** Scrape job whose targets expose it (prometheus.yml); undefined: any (Prometheus's own `up`). */
  job: string | undefined;
}

const HUB_JOB = 'hub';
const EDGE_JOB = 'edge-agent';

function catalog(registry: Registry, job: string, extraLabels: string[]): Map<string, KnownMetric> {
  const known = new Map<string, KnownMetric>();
  for (const metric of registry.getMetricsAsArray()) {
    // prom-client's typings declare a numeric enum; at run time `type` is the exposition type ('counter', ...).
    const type = String(metric.type) as MetricType;
    const labelNames = (metric as unknown as { labelNames?: string[] }).labelNames ?? [];
    known.set(metric.name, { type, labels: new Set([...labelNames, 'job', 'instance', ...extraLabels]), job });
  }
  return known;
}

function knownMetrics(): Map<string, KnownMetric> {
  const hub = new HubMetrics(undefined, { defaultMetrics: true });
  // The registry's collect() callbacks read the components only at scrape time, and this test never scrapes: the
  // components can be empty stand-ins. deadLetters and schemas are present so their optional metrics register too.
  const edge = createMetricsRegistry({ agentId: 'test-agent', deadLetters: {}, schemas: {} } as unknown as AdminDeps);
  return new Map([
    ...catalog(hub.registry, HUB_JOB, []),
    // registry.setDefaultLabels({ agent }) puts `agent` on every agent series.
    ...catalog(edge, EDGE_JOB, ['agent']),
    ['up', { type: 'gauge', labels: new Set(['job', 'instance']), job: undefined }],
  ]);
}

const KNOWN = knownMetrics();

/** A series name as queried: `x_bucket` of histogram `x` resolves to `x`. */
function resolveSeries(name: string): { base: string; metric: KnownMetric; suffix: '' | '_bucket' | '_sum' | '_count' } | undefined {
  const direct = KNOWN.get(name);
  if (direct) return { base: name, metric: direct, suffix: '' };
  const match = /^(.+)(_bucket|_sum|_count)$/.exec(name);
  if (!match) return undefined;
  const [, base, suffix] = match as unknown as [string, string, '_bucket' | '_sum' | '_count'];
  const metric = KNOWN.get(base);
  if (!metric) return undefined;
  if (metric.type === 'histogram' || (metric.type === 'summary' && suffix !== '_bucket')) return { base, metric, suffix };
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// A PromQL parser for the subset the files use: selectors, range vectors, functions, aggregations with by/without,
// binary operators with bool/on/ignoring/group_left/group_right, offset. It records each selector with the calls
// around it, which is what the checks below need.

const FUNCTIONS = new Set([
  'abs', 'absent', 'absent_over_time', 'avg_over_time', 'ceil', 'changes', 'clamp', 'clamp_max', 'clamp_min',
  'count_over_time', 'delta', 'deriv', 'exp', 'floor', 'histogram_quantile', 'idelta', 'increase', 'irate',
  'label_join', 'label_replace', 'last_over_time', 'ln', 'log10', 'log2', 'max_over_time', 'min_over_time',
  'predict_linear', 'quantile_over_time', 'rate', 'resets', 'round', 'scalar', 'sort', 'sort_desc', 'sqrt',
  'stddev_over_time', 'sum_over_time', 'time', 'timestamp', 'vector',
]);
const AGGREGATIONS = new Set(['avg', 'bottomk', 'count', 'count_values', 'group', 'max', 'min', 'quantile', 'stddev', 'stdvar', 'sum', 'topk']);
const COUNTER_FUNCTIONS = new Set(['rate', 'irate', 'increase']);
/** Functions that take a range vector of a gauge. */
const GAUGE_RANGE_FUNCTIONS = new Set([
  'avg_over_time', 'changes', 'count_over_time', 'delta', 'deriv', 'idelta', 'last_over_time', 'max_over_time',
  'min_over_time', 'predict_linear', 'quantile_over_time', 'stddev_over_time', 'sum_over_time', 'absent_over_time',
]);
const SET_OPERATORS = new Set(['and', 'or', 'unless']);
const ARITHMETIC_OPERATORS = new Set(['+', '-', '*', '/', '%', '^', '==', '!=', '>', '<', '>=', '<=']);
const DURATION = /^(?:\d+(?:ms|[smhdwy]))+$/;

interface Frame {
  name: string;
  /** Labels of a `by (...)` clause; undefined when the aggregation has none (or uses without). */
  by?: string[];
}
interface SelectorRef {
  name: string;
  matchers: { label: string; op: string; value: string }[];
  range: string | undefined;
  /** Enclosing calls, outermost first. */
  frames: Frame[];
}

type TokenKind = 'ident' | 'number' | 'string' | 'duration' | 'op' | 'punct' | 'end';
interface Token {
  kind: TokenKind;
  text: string;
  pos: number;
}

const TOKEN_PATTERNS: [TokenKind, RegExp][] = [
  ['string', /^(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)/],
  ['duration', /^(?:\d+(?:ms|[smhdwy]))+(?![a-zA-Z0-9_])/],
  ['number', /^(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?(?![a-zA-Z_])/i],
  ['ident', /^[a-zA-Z_][a-zA-Z0-9_:]*/],
  ['op', /^(?:==|!=|>=|<=|=~|!~|[-+*/%^<>=])/],
  ['punct', /^[(){}[\],]/],
];

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let pos = 0;
  while (pos < expr.length) {
    const rest = expr.slice(pos);
    const space = /^\s+/.exec(rest);
    if (space) {
      pos += space[0].length;
      continue;
    }
    const hit = TOKEN_PATTERNS.map(([kind, re]) => [kind, re.exec(rest)] as const).find(([, m]) => m);
    if (!hit) throw new Error(`unexpected character ${JSON.stringify(rest[0])} at ${pos}`);
    const [kind, match] = hit;
    tokens.push({ kind, text: match![0], pos });
    pos += match![0].length;
  }
  tokens.push({ kind: 'end', text: '<end>', pos });
  return tokens;
}

function parsePromQL(expr: string): SelectorRef[] {
  const tokens = tokenize(expr);
  const refs: SelectorRef[] = [];
  const frames: Frame[] = [];
  let i = 0;
  const peek = (offset = 0): Token => tokens[Math.min(i + offset, tokens.length - 1)]!;
  const next = (): Token => tokens[i++]!;
  const fail = (what: string, token = peek()): never => {
    throw new Error(`${what}, got ${JSON.stringify(token.text)} at ${token.pos}`);
  };
  const expect = (text: string): Token => (peek().text === text ? next() : fail(`expected ${JSON.stringify(text)}`));

  const labelList = (): string[] => {
    expect('(');
    const labels: string[] = [];
    while (peek().text !== ')') {
      if (peek().kind !== 'ident') fail('expected a label name');
      labels.push(next().text);
      if (peek().text === ',') next();
      else break;
    }
    expect(')');
    return labels;
  };

  const args = (frame: Frame): void => {
    expect('(');
    frames.push(frame);
    if (peek().text !== ')') {
      expression();
      while (peek().text === ',') {
        next();
        expression();
      }
    }
    frames.pop();
    expect(')');
  };

  const selector = (name: string): SelectorRef => {
    const ref: SelectorRef = { name, matchers: [], range: undefined, frames: [...frames] };
    if (peek().text === '{') {
      next();
      while (peek().text !== '}') {
        if (peek().kind !== 'ident') fail('expected a label name in a matcher');
        const label = next().text;
        const op = next();
        if (!['=', '!=', '=~', '!~'].includes(op.text)) fail('expected =, !=, =~ or !~', op);
        const value = next();
        if (value.kind !== 'string') fail('expected a quoted label value', value);
        ref.matchers.push({ label, op: op.text, value: value.text.slice(1, -1) });
        if (peek().text === ',') next();
        else break;
      }
      expect('}');
    }
    refs.push(ref);
    return ref;
  };

  const primary = (): SelectorRef | undefined => {
    const token = peek();
    if (token.kind === 'number' || token.kind === 'string') {
      next();
      return undefined;
    }
    if (token.text === '(') {
      next();
      expression();
      expect(')');
      return undefined;
    }
    if (token.kind !== 'ident') return fail('expected an expression');
    const name = next().text;
    if (AGGREGATIONS.has(name) && (peek().text === '(' || peek().text === 'by' || peek().text === 'without')) {
      const frame: Frame = { name };
      const grouping = (): void => {
        const keyword = next().text;
        const labels = labelList();
        if (keyword === 'by') frame.by = labels;
      };
      if (peek().text === 'by' || peek().text === 'without') grouping();
      args(frame);
      if (peek().text === 'by' || peek().text === 'without') grouping();
      return undefined;
    }
    if (FUNCTIONS.has(name)) {
      if (peek().text !== '(') fail(`expected ( after ${name}`);
      args({ name });
      return undefined;
    }
    if (peek().text === '(') fail(`unknown function ${name}`, token);
    if (['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', ...SET_OPERATORS].includes(name)) {
      fail('expected an expression', token);
    }
    return selector(name);
  };

  const postfix = (): void => {
    const ref = primary();
    if (peek().text === '[') {
      if (!ref) fail('a range applies to a selector only');
      next();
      const duration = next();
      if (duration.kind !== 'duration') fail('expected a duration', duration);
      ref!.range = duration.text;
      expect(']');
    }
    if (peek().text === 'offset') {
      next();
      if (next().kind !== 'duration') fail('expected a duration after offset', tokens[i - 1]);
    }
  };

  const unary = (): void => {
    if (peek().text === '-' || peek().text === '+') next();
    postfix();
  };

  const expression = (): void => {
    unary();
    for (;;) {
      const token = peek();
      const isOperator = (token.kind === 'op' && ARITHMETIC_OPERATORS.has(token.text)) || (token.kind === 'ident' && SET_OPERATORS.has(token.text));
      if (!isOperator) return;
      next();
      if (peek().text === 'bool') next();
      if (peek().text === 'on' || peek().text === 'ignoring') {
        next();
        labelList();
        if (peek().text === 'group_left' || peek().text === 'group_right') {
          next();
          if (peek().text === '(') labelList();
        }
      }
      unary();
    }
  };

  expression();
  if (peek().kind !== 'end') fail('unexpected token after the expression');
  return refs;
}

/** Grafana's interval variables stand for durations; other variables appear only inside label values. */
function withGrafanaIntervals(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m');
}

/**
 * Problems of one expression: it does not parse, names a metric or label the code does not register, a job
 * prometheus.yml does not scrape (or not the one exposing the metric), uses rate() on a gauge or a counter without
 * rate(), or takes histogram_quantile() of buckets summed without `le`.
 */
function problemsOf(expr: string, jobs: ReadonlySet<string>): string[] {
  let refs: SelectorRef[];
  try {
    refs = parsePromQL(withGrafanaIntervals(expr));
  } catch (error) {
    return [`does not parse: ${(error as Error).message}`];
  }
  if (refs.length === 0) return ['names no metric'];
  const problems: string[] = [];
  for (const ref of refs) {
    const series = resolveSeries(ref.name);
    if (!series) {
      problems.push(`${ref.name} is not registered by the hub or the agent`);
      continue;
    }
    const { metric, suffix } = series;
    const allowed = suffix === '_bucket' ? new Set([...metric.labels, 'le']) : metric.labels;
    for (const { label } of ref.matchers) if (!allowed.has(label)) problems.push(`${ref.name} has no label ${label}`);
    const job = ref.matchers.find((m) => m.label === 'job');
    if (!job) problems.push(`${ref.name} selects no job`);
    else if (job.op === '=') {
      if (!jobs.has(job.value)) problems.push(`${ref.name}: job ${job.value} is not scraped by prometheus.yml`);
      if (metric.job !== undefined && job.value !== metric.job) problems.push(`${ref.name} is exposed by job ${metric.job}, not ${job.value}`);
    }
    const inner = ref.frames.at(-1)?.name;
    const cumulative = metric.type === 'counter' || suffix !== '';
    if (cumulative && !(inner && COUNTER_FUNCTIONS.has(inner) && ref.range)) {
      problems.push(`${ref.name} is cumulative: take rate() or increase() of it`);
    }
    if (!cumulative) {
      if (inner && COUNTER_FUNCTIONS.has(inner)) problems.push(`${ref.name} is a gauge: ${inner}() of it is meaningless`);
      else if (ref.range && !(inner && GAUGE_RANGE_FUNCTIONS.has(inner))) problems.push(`${ref.name}[${ref.range}] is not inside a range function`);
    }
    if (suffix === '_bucket') {
      const quantile = ref.frames.findIndex((f) => f.name === 'histogram_quantile');
      if (quantile < 0) problems.push(`${ref.name} outside histogram_quantile()`);
      for (const frame of ref.frames.slice(quantile + 1)) {
        if (AGGREGATIONS.has(frame.name) && !frame.by?.includes('le')) problems.push(`${ref.name}: ${frame.name} inside histogram_quantile() must keep le`);
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// The files.

interface ScrapeConfig {
  job_name: string;
  metrics_path?: string;
  static_configs: { targets: string[] }[];
}
interface PrometheusConfig {
  rule_files: string[];
  scrape_configs: ScrapeConfig[];
}
interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: string };
  annotations: { summary: string; description: string };
}
interface RulesFile {
  groups: { name: string; rules: AlertRule[] }[];
}
interface Target {
  refId: string;
  expr: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string }; datasource?: { uid: string } }[] };
}

const prometheus = readYaml('prometheus/prometheus.yml') as PrometheusConfig;
const rules = readYaml('prometheus/alert-rules.yml') as RulesFile;
const dashboard = JSON.parse(readFileSync(deployFile('grafana/pipeline-dashboard.json'), 'utf8')) as Dashboard;
const JOBS = new Set(prometheus.scrape_configs.map((c) => c.job_name));
const allRules = rules.groups.flatMap((g) => g.rules);
/** Rows with their collapsed children, and the panels between them. */
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = allPanels.filter((p) => p.type !== 'row');
const DATASOURCE = '${DS_PROMETHEUS}';

// ---------------------------------------------------------------------------------------------------------------

test('the PromQL check refuses what it is meant to catch', () => {
  const jobs = new Set([HUB_JOB, EDGE_JOB]);
  const cases: [string, RegExp | undefined][] = [
    ['sum by (job, instance) (rate(hub_flushes_total{job="hub", result="error"}[5m])) > 0', undefined],
    ['histogram_quantile(0.95, sum by (le) (rate(hub_ingest_latency_seconds_bucket{job="hub"}[$__rate_interval])))', undefined],
    ['edge_outbox_bytes{job="edge-agent"} / on (agent) group_left edge_outbox_max_bytes{job="edge-agent"} > bool 0.8', undefined],
    ['max_over_time(hub_held_messages{job="hub"}[10m]) > 0 unless up{job="hub"} == 0', undefined],
    ['rate(hub_flushes_total{job="hub"}[5m]', /does not parse/],
    ['rate(hub_flushes_total{job="hub"}[5m]))', /does not parse/],
    ['rated(hub_flushes_total{job="hub"}[5m])', /unknown function rated/],
    ['rate(hub_flushes_total{job="hub"}[5 m])', /does not parse/],
    ['rate(hub_flushes{job="hub"}[5m])', /hub_flushes is not registered/],
    ['rate(hub_flushes_total{job="hub", reason="x"}[5m])', /has no label reason/],
    ['rate(hub_flushes_total[5m])', /selects no job/],
    ['rate(process_cpu_seconds_total{job="edge-agent"}[5m])', /exposed by job hub/],
    ['rate(hub_flushes_total{job="hubs"}[5m])', /not scraped/],
    ['hub_flushes_total{job="hub"} > 0', /cumulative/],
    ['rate(hub_sink_failing{job="hub"}[5m])', /gauge/],
    ['histogram_quantile(0.95, sum(rate(hub_ingest_latency_seconds_bucket{job="hub"}[5m])))', /must keep le/],
    ['sum(rate(hub_ingest_latency_seconds_bucket{job="hub"}[5m]))', /outside histogram_quantile/],
    ['hub_flush_rows_count{job="hub"} > 0', /cumulative/],
    ['edge_outbox_rows_bucket{job="edge-agent"}', /not registered/],
  ];
  for (const [expr, expected] of cases) {
    const problems = problemsOf(expr, jobs);
    if (expected) assert.ok(problems.some((p) => expected.test(p)), `${expr}: expected ${expected}, got ${JSON.stringify(problems)}`);
    else assert.deepEqual(problems, [], expr);
  }
});

test('the registries the checks use hold the hub\'s, the agent\'s and the default process metrics', () => {
  for (const name of ['hub_ingest_latency_seconds', 'hub_sink_failing', 'process_cpu_seconds_total', 'nodejs_heap_size_used_bytes']) {
    assert.equal(KNOWN.get(name)?.job, HUB_JOB, name);
  }
  for (const name of ['edge_events_accepted_total', 'edge_outbox_bytes', 'edge_dead_letters_unforwarded', 'edge_process_cpu_seconds_total']) {
    assert.equal(KNOWN.get(name)?.job, EDGE_JOB, name);
  }
  assert.equal(KNOWN.get('hub_ingest_latency_seconds')?.type, 'histogram');
  assert.ok(KNOWN.get('edge_outbox_bytes')?.labels.has('agent'));
});

test('prometheus.yml scrapes the hubs on 8090 and the agents on 9464 at /metrics, and loads the alert rules', () => {
  const byJob = new Map(prometheus.scrape_configs.map((c) => [c.job_name, c]));
  assert.equal(byJob.size, prometheus.scrape_configs.length, 'job names are unique');
  for (const [job, port] of [[HUB_JOB, 8090], [EDGE_JOB, 9464]] as const) {
    const config = byJob.get(job);
    assert.ok(config, `scrape job ${job}`);
    assert.equal(config.metrics_path ?? '/metrics', '/metrics');
    const targets = config.static_configs.flatMap((s) => s.targets);
    assert.ok(targets.length > 0, `${job} has targets`);
    for (const target of targets) assert.match(target, /^[\w.-]+:\d+$/, `${job} target ${target}`);
    assert.ok(targets.some((t) => t.endsWith(`:${port}`)), `${job} scrapes port ${port}`);
  }
  assert.ok(prometheus.rule_files.includes('alert-rules.yml'));
  for (const file of prometheus.rule_files) assert.ok(existsSync(deployFile(`prometheus/${file}`)), `rule file ${file} is beside prometheus.yml`);
});

test('every alert rule has an expression, a for duration, a severity, a summary and a description', () => {
  assert.ok(rules.groups.length > 0);
  for (const group of rules.groups) {
    assert.ok(group.name, 'group name');
    assert.ok(Array.isArray(group.rules) && group.rules.length > 0, `${group.name} has rules`);
  }
  const names = allRules.map((r) => r.alert);
  assert.equal(new Set(names).size, names.length, `alert names are unique: ${names.join(', ')}`);
  for (const rule of allRules) {
    assert.match(rule.alert, /^[A-Z][A-Za-z0-9]+$/, `alert name ${rule.alert}`);
    assert.equal(typeof rule.expr, 'string', `${rule.alert}: expr`);
    assert.match(String(rule.for), DURATION, `${rule.alert}: for`);
    assert.ok(['critical', 'warning', 'info'].includes(rule.labels?.severity), `${rule.alert}: severity ${rule.labels?.severity}`);
    assert.ok(rule.annotations?.summary?.trim(), `${rule.alert}: summary`);
    assert.ok(rule.annotations?.description?.trim(), `${rule.alert}: description`);
    const templates = `${rule.annotations.summary} ${rule.annotations.description}`.match(/\{\{[^}]*\}\}/g) ?? [];
    for (const t of templates) assert.match(t, /^\{\{ \$(?:labels\.[a-z_]+|value)(?: \| [a-zA-Z]+)? \}\}$/, `${rule.alert}: template ${t}`);
  }
});

test('the alert rules cover the failures issue 7 names', () => {
  const byName = new Map(allRules.map((r) => [r.alert, r]));
  const expected: [string, RegExp][] = [
    ['HubDown', /up\{job="hub"\} == 0/],
    ['HubQuestDBWritesFailing', /hub_sink_failing\{[^}]*\} == 1/],
    ['HubFlushErrorRateHigh', /result="error"/],
    ['HubConsumerStalled', /hub_held_messages/],
    ['HubEndToEndLatencyHigh', /histogram_quantile\(0\.95, .*hub_ingest_latency_seconds_bucket/],
    ['EdgeAgentDown', /up\{job="edge-agent"\} == 0/],
    ['EdgeOutboxFilling', /edge_outbox_bytes\{[^}]*\} \/ edge_outbox_max_bytes\{[^}]*\} > 0\.8/],
    ['EdgeOutboxOldestEventOld', /edge_outbox_oldest_age_seconds/],
    ['EdgeNotPublishing', /rate\(edge_events_published_total\{[^}]*\}\[5m\]\) == 0\s+and rate\(edge_events_accepted_total/],
    ['EdgeDeadLetterRateHigh', /edge_events_rejected_total/],
  ];
  for (const [name, expr] of expected) {
    const rule = byName.get(name);
    assert.ok(rule, `alert ${name}`);
    assert.match(rule.expr, expr, name);
  }
  assert.equal(byName.get('HubQuestDBWritesFailing')!.for, '1m');
});

test('every alert expression parses and names only registered metrics, labels and scraped jobs', () => {
  const problems = allRules.flatMap((r) => problemsOf(r.expr, JOBS).map((p) => `${r.alert}: ${p}`));
  assert.deepEqual(problems, []);
});

test('the dashboard is "Edge-to-hub pipeline", with a Prometheus datasource variable every panel and query uses', () => {
  assert.equal(dashboard.title, 'Edge-to-hub pipeline');
  assert.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/);
  assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
  const variable = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS');
  assert.equal(variable?.type, 'datasource');
  assert.equal(variable?.query, 'prometheus');
  for (const panel of queryPanels) {
    assert.equal(panel.datasource?.uid, DATASOURCE, `panel ${panel.title}`);
    for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid ?? DATASOURCE, DATASOURCE, `${panel.title} ${target.refId}`);
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) assert.equal(v.datasource?.uid, DATASOURCE, `variable ${v.name}`);
});

test('dashboard panels have unique ids, fit the 24-column grid without overlapping, and each queries something', () => {
  const ids = allPanels.map((p) => p.id);
  assert.ok(ids.every((id) => Number.isInteger(id) && id > 0), 'ids are positive integers');
  assert.equal(new Set(ids).size, ids.length, 'ids are unique');
  const cells = new Map<string, string>();
  for (const panel of allPanels) {
    const { x, y, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && h > 0 && x + w <= 24 && y >= 0, `${panel.title}: gridPos ${JSON.stringify(panel.gridPos)}`);
    for (let cx = x; cx < x + w; cx++) {
      for (let cy = y; cy < y + h; cy++) {
        const other = cells.get(`${cx},${cy}`);
        assert.equal(other, undefined, `${panel.title} overlaps ${other}`);
        cells.set(`${cx},${cy}`, panel.title);
      }
    }
  }
  assert.ok(queryPanels.length >= 15, `${queryPanels.length} panels`);
  for (const panel of queryPanels) {
    assert.ok(panel.title?.trim(), `panel ${panel.id} has a title`);
    assert.ok(Array.isArray(panel.targets) && panel.targets.length > 0, `${panel.title} has targets`);
    const refIds = panel.targets.map((t) => t.refId);
    assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: refIds are unique`);
    for (const target of panel.targets) assert.ok(target.expr?.trim(), `${panel.title} ${target.refId} has an expr`);
  }
});

test('every dashboard query and variable parses and names only registered metrics, labels and scraped jobs', () => {
  const problems = queryPanels.flatMap((panel) =>
    (panel.targets ?? []).flatMap((t) => problemsOf(t.expr, JOBS).map((p) => `${panel.title} ${t.refId}: ${p}`)),
  );
  for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
    const match = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/.exec(query);
    if (!match) {
      problems.push(`variable ${variable.name}: expected label_values(<selector>, <label>), got ${query}`);
      continue;
    }
    const [, selectorExpr, label] = match as unknown as [string, string, string];
    problems.push(...problemsOf(selectorExpr, JOBS).filter((p) => !/cumulative/.test(p)).map((p) => `variable ${variable.name}: ${p}`));
    const [ref] = parsePromQL(selectorExpr);
    if (ref && !resolveSeries(ref.name)?.metric.labels.has(label)) problems.push(`variable ${variable.name}: ${ref.name} has no label ${label}`);
  }
  assert.deepEqual(problems, []);
});

test('the dashboard shows every stage: edge ingest, outbox, dead letters, hub consumption, QuestDB writes, latency, processes', () => {
  const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const named = new Set(exprs.flatMap((e) => parsePromQL(withGrafanaIntervals(e)).map((r) => r.name)));
  for (const name of [
    'edge_events_accepted_total', 'edge_events_refused_outbox_full_total', 'edge_events_published_total',
    'edge_outbox_rows', 'edge_outbox_bytes', 'edge_outbox_max_bytes', 'edge_outbox_oldest_age_seconds',
    'edge_dead_letters', 'edge_dead_letters_unforwarded',
    'hub_events_consumed_total', 'hub_rows_written_total', 'hub_flush_duration_seconds_bucket',
    'hub_ingest_latency_seconds_bucket', 'hub_event_latency_seconds_bucket',
    'hub_held_messages', 'hub_buffered_rows', 'hub_sink_failing',
    'process_cpu_seconds_total', 'process_resident_memory_bytes', 'edge_process_cpu_seconds_total', 'edge_process_resident_memory_bytes',
  ]) {
    assert.ok(named.has(name), `the dashboard queries ${name}`);
  }
  for (const quantile of ['0.5', '0.95', '0.99']) {
    assert.ok(
      exprs.some((e) => e.startsWith(`histogram_quantile(${quantile}, `) && e.includes('hub_ingest_latency_seconds_bucket')),
      `end-to-end latency p${Number(quantile) * 100}`,
    );
  }
});
