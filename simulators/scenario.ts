/**
 * Scenario files (simulators/scenarios/*.yaml): the traffic of a run, its chaos and the patterns it plants, checked
 * against a JSON Schema on load so that a typo fails with the field and the reason before anything is sent.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { NO_CHAOS, type ChaosOptions } from './lib/chaos.js';
import { plantPattern, type PatternName } from './lib/patterns.js';

export interface Scenario {
  name: string;
  description?: string;
  seed: number;
  durationSeconds: number;
  /** Prefix of device ids, user ids and event ids, so that runs can be told apart in QuestDB. */
  prefix: string;
  devices: {
    count: number;
    /** Readings per second, whole fleet. */
    ratePerSecond: number;
    /** Readings per MQTT publish (1: one JSON object; more: a JSON array). */
    batch: number;
    qos: 0 | 1;
    /** MQTT password of every device (user name = device id); unset: no credentials. */
    password?: string;
    /** Signal model: noise (standard deviation), drift per reading, and the share of readings that spike. */
    noise: number;
    drift: number;
    spikeShare: number;
    /** Share of devices that stop sending half-way through the run (they go silent). */
    silentShare: number;
  };
  apps: {
    users: number;
    ratePerSecond: number;
    /** Events per HTTP request (NDJSON). */
    batch: number;
    apiKey?: string;
  };
  chaos: ChaosOptions;
  plant: Array<{ pattern: PatternName; count: number; atSeconds: number }>;
}

const chaosProperties = Object.fromEntries(Object.keys(NO_CHAOS).map((k) => [k, { type: 'number', minimum: 0 }]));

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'durationSeconds', 'devices', 'apps'],
  properties: {
    name: { type: 'string', pattern: '^[a-z0-9-]+$' },
    description: { type: 'string' },
    seed: { type: 'integer', default: 1 },
    durationSeconds: { type: 'number', exclusiveMinimum: 0 },
    prefix: { type: 'string', pattern: '^[a-z0-9-]+$', default: 'sim' },
    devices: {
      type: 'object',
      additionalProperties: false,
      required: ['count', 'ratePerSecond'],
      properties: {
        count: { type: 'integer', minimum: 0 },
        ratePerSecond: { type: 'number', minimum: 0 },
        batch: { type: 'integer', minimum: 1, default: 1 },
        qos: { enum: [0, 1], default: 1 },
        password: { type: 'string' },
        noise: { type: 'number', minimum: 0, default: 0.2 },
        drift: { type: 'number', minimum: 0, default: 0.02 },
        spikeShare: { type: 'number', minimum: 0, maximum: 1, default: 0.001 },
        silentShare: { type: 'number', minimum: 0, maximum: 1, default: 0 },
      },
    },
    apps: {
      type: 'object',
      additionalProperties: false,
      required: ['users', 'ratePerSecond'],
      properties: {
        users: { type: 'integer', minimum: 1 },
        ratePerSecond: { type: 'number', minimum: 0 },
        batch: { type: 'integer', minimum: 1, default: 100 },
        apiKey: { type: 'string' },
      },
    },
    chaos: { type: 'object', additionalProperties: false, properties: chaosProperties, default: {} },
    plant: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['pattern', 'count'],
        properties: {
          pattern: { enum: ['overheating', 'suspicious-login', 'hyperactive-user', 'device-silent'] },
          count: { type: 'integer', minimum: 1 },
          atSeconds: { type: 'number', minimum: 0, default: 5 },
        },
      },
    },
  },
} as const;

const validate = new Ajv({ useDefaults: true, allErrors: true }).compile(schema);

/** Parses and checks a scenario; throws with every problem (path and reason) when it is not valid. */
export function parseScenario(text: string, where = 'scenario'): Scenario {
  const data = parse(text) as unknown;
  if (!validate(data)) {
    const problems = (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${e.params && 'allowedValues' in e.params ? ` (${(e.params.allowedValues as unknown[]).join(', ')})` : ''}${e.params && 'additionalProperty' in e.params ? `: ${String(e.params.additionalProperty)}` : ''}`);
    throw new Error(`${where} is not a valid scenario:\n  ${problems.join('\n  ')}`);
  }
  const scenario = data as unknown as Scenario;
  scenario.chaos = { ...NO_CHAOS, ...scenario.chaos };
  for (const p of scenario.plant) {
    // The whole pattern (its last copy starts 250 ms after the one before) must fit in the run.
    const span = plantPattern(p.pattern, 'x', 0, 'x').events.at(-1)!.atMs + (p.count - 1) * 250;
    if (p.atSeconds * 1000 + span >= scenario.durationSeconds * 1000) {
      throw new Error(`${where}: plant ${p.pattern} x${p.count} at ${p.atSeconds} s runs ${span / 1000} s, past the end of the run (${scenario.durationSeconds} s)`);
    }
  }
  return scenario;
}

export function loadScenario(path: string): Scenario {
  return parseScenario(readFileSync(path, 'utf8'), path);
}
