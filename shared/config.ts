/**
 * Config loading shared by the agent and the hub: a JSON or YAML file, then environment overrides, then the
 * component's JSON Schema (ajv, defaults filled in, unknown keys refused) with errors that name the field.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';

export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG_INVALID';
}

/** Reads `--config <path>` (or `--config=<path>`) from argv; undefined when absent. */
export function configPathFromArgv(argv: string[] = process.argv.slice(2)): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config' || arg === '-c') return argv[i + 1];
    if (arg.startsWith('--config=')) return arg.slice('--config='.length);
  }
  return undefined;
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  try {
    const parsed: unknown = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    if (parsed === null || parsed === undefined) return {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('the top level must be an object');
    return parsed as Record<string, unknown>;
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(error as Error).message}`);
  }
}

/**
 * Applies `PREFIX_A__B=value` environment variables as overrides of field `a.b` (camelCase matched
 * case-insensitively, `__` separates levels). Values are parsed as JSON when they parse, else kept as strings,
 * so `EDGE_HTTP__PORT=8081` is a number and `EDGE_NATS__SERVERS=["nats://h:4222"]` a list.
 */
export function applyEnvOverrides(config: Record<string, unknown>, prefix: string, schema: object, env = process.env): void {
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(prefix) || raw === undefined) continue;
    const path = name.slice(prefix.length).split('__').filter(Boolean);
    let target = config;
    let node: Record<string, unknown> | undefined = schema as Record<string, unknown>;
    for (let i = 0; i < path.length; i++) {
      const props = (node?.properties ?? {}) as Record<string, Record<string, unknown>>;
      const key = Object.keys(props).find((k) => k.toLowerCase() === path[i]!.toLowerCase().replace(/_/g, ''));
      if (!key) throw new ConfigError(`environment variable ${name}: no config field "${path.slice(0, i + 1).join('.')}"`);
      if (i === path.length - 1) {
        target[key] = parseEnvValue(raw);
      } else {
        if (typeof target[key] !== 'object' || target[key] === null) target[key] = {};
        target = target[key] as Record<string, unknown>;
        node = props[key];
      }
    }
  }
}

function parseEnvValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });

/** Validates (and fills defaults into) `config`; throws ConfigError listing every bad field. */
export function validateConfig<T>(schema: object, config: Record<string, unknown>, what: string): T {
  const validate = ajv.compile(schema);
  if (!validate(config)) {
    throw new ConfigError(`invalid ${what} config:\n${formatAjvErrors(validate.errors ?? [], 'config').map((l) => `  - ${l}`).join('\n')}`);
  }
  return config as T;
}

/** Turns ajv errors into sentences that name the field: `config.http.port must be <= 65535, got 70000`. */
export function formatAjvErrors(errors: ErrorObject[], root: string): string[] {
  return errors.map((error) => {
    const path = root + error.instancePath.replace(/\//g, '.');
    switch (error.keyword) {
      case 'required':
        return `${path}.${(error.params as { missingProperty: string }).missingProperty} is required`;
      case 'additionalProperties':
        return `${path}.${(error.params as { additionalProperty: string }).additionalProperty} is not an allowed field`;
      case 'enum':
        return `${path} must be one of ${(error.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
      default:
        return `${path} ${error.message ?? 'is invalid'}`;
    }
  });
}

/** File, then env overrides, then schema validation with defaults. */
export function loadConfig<T>(schema: object, options: { path?: string; envPrefix: string; what: string }): T {
  const config = options.path ? readConfigFile(options.path) : {};
  applyEnvOverrides(config, options.envPrefix, schema);
  return validateConfig<T>(schema, config, options.what);
}
