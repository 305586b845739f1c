/**
 * Manages the hub's rules in their NATS KV bucket; every running hub picks a change up within a second or so.
 *
 *   tsx hub/src/rules/rules-cli.ts list                     every rule: name, kind, revision, last change (invalid ones flagged)
 *   tsx hub/src/rules/rules-cli.ts get <name>               one rule as JSON
 *   tsx hub/src/rules/rules-cli.ts put <file>               a rule file ({ rules: [...] }) or one rule, YAML or JSON: validated, then put
 *   tsx hub/src/rules/rules-cli.ts delete <name>            removes the rule from every hub
 *   tsx hub/src/rules/rules-cli.ts publish [dir] [--force]  what the hub does at start: rule files into KV, never overwriting KV edits unless --force
 *
 * Options: --servers nats://h1:4222,nats://h2:4222 (else HUB_NATS__SERVERS, a JSON array or a comma list; user and
 * password from HUB_NATS__USER / HUB_NATS__PASS), --bucket (default hub-rules), --replicas (when the bucket is
 * created, default 3). Exit code 0 on success, 1 on a refused rule or a failed request, 2 on a usage error.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { parse as parseYaml } from 'yaml';
import { natsAuthOptions } from '../../../shared/nats-auth.js';
import { errorMessage } from '../errors.js';
import { parseRuleFile, validateRule, type Rule } from '../operators/rules.js';
import { DEFAULT_RULES_BUCKET, DEFAULT_RULES_DIR, DEFAULT_RULES_REPLICAS, canonicalJson, decodeRule, openRuleBucket, publishRuleFiles, ruleKey, ruleNameOf } from './kv-rule-store.js';

const USAGE = `usage: rules-cli <command> [--servers nats://host:4222[,...]] [--bucket ${DEFAULT_RULES_BUCKET}] [--replicas ${DEFAULT_RULES_REPLICAS}]
  list                     every rule in the bucket
  get <name>               one rule as JSON
  put <file>               validate a rule file ({ rules: [...] }) or a single rule (YAML or JSON) and put its rules
  delete <name>            delete a rule
  publish [dir] [--force]  publish rule files (default ${DEFAULT_RULES_DIR}); --force overwrites rules edited in KV
servers: --servers, else HUB_NATS__SERVERS (JSON array or comma list)
`;

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
}

class UsageError extends Error {}

/** The NATS servers from `--servers` or HUB_NATS__SERVERS (JSON array, or comma-separated). */
export function serversFrom(option: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const raw = option ?? env.HUB_NATS__SERVERS;
  if (raw === undefined || raw.trim() === '') throw new UsageError('no NATS servers: pass --servers nats://host:4222 or set HUB_NATS__SERVERS');
  if (raw.trim().startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (error) {
      throw new UsageError(`HUB_NATS__SERVERS is not a JSON array: ${errorMessage(error)}`);
    }
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((s) => typeof s === 'string' && s !== '')) {
      throw new UsageError(`servers must be a non-empty list of URLs, got ${raw}`);
    }
    return parsed as string[];
  }
  return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** The rules of a file: a rule file (`rules: [...]`) or one rule object. Throws naming the field at fault. */
export function rulesOfFile(text: string, source: string): Rule[] {
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    throw new Error(`${source} is not valid YAML or JSON: ${errorMessage(error)}`);
  }
  if (parsed !== null && typeof parsed === 'object' && 'rules' in parsed) return parseRuleFile(text, source);
  return [validateRule(parsed)];
}

export async function runRulesCli(argv: string[], io: CliIo): Promise<number> {
  let nc: NatsConnection | undefined;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        servers: { type: 'string' },
        bucket: { type: 'string', default: DEFAULT_RULES_BUCKET },
        replicas: { type: 'string', default: String(DEFAULT_RULES_REPLICAS) },
        force: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    const [command, ...args] = positionals;
    if (values.help || command === undefined) {
      io.out(USAGE);
      return values.help ? 0 : 2;
    }
    const arity: Record<string, [number, number]> = { list: [0, 0], get: [1, 1], put: [1, 1], delete: [1, 1], publish: [0, 1] };
    const expected = arity[command];
    if (!expected) throw new UsageError(`unknown command "${command}": use list, get, put, delete or publish`);
    if (args.length < expected[0] || args.length > expected[1]) throw new UsageError(`${command} takes ${expected[1] === 0 ? 'no argument' : expected[0] === 0 ? 'at most one argument' : 'one argument'}, got ${args.length}`);
    const replicas = Number(values.replicas);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) throw new UsageError(`--replicas must be an integer from 1 to 5, got ${values.replicas}`);

    // Check the input before connecting: a bad file fails fast and offline.
    const toPut = command === 'put' ? rulesOfFile(readInput(args[0]!), args[0]!) : [];
    for (const rule of toPut) ruleKey(rule.name);
    if (command === 'get' || command === 'delete') ruleKey(args[0]!);

    const servers = serversFrom(values.servers, io.env);
    try {
      nc = await connect({
        servers,
        name: 'hub-rules-cli',
        timeout: 5000,
        // The same environment overrides as the hub (HUB_NATS__USER/PASS, HUB_NATS__NKEY_SEED_FILE, HUB_NATS__TLS__CA_FILE).
        ...natsAuthOptions({
          ...(io.env.HUB_NATS__USER ? { user: io.env.HUB_NATS__USER, pass: io.env.HUB_NATS__PASS ?? '' } : {}),
          ...(io.env.HUB_NATS__NKEY_SEED_FILE ? { nkeySeedFile: io.env.HUB_NATS__NKEY_SEED_FILE } : {}),
          ...(io.env.HUB_NATS__TLS__CA_FILE ? { tls: { caFile: io.env.HUB_NATS__TLS__CA_FILE } } : {}),
        }, servers),
      });
    } catch (error) {
      throw new Error(`cannot connect to NATS at ${servers.join(', ')}: ${errorMessage(error)}`);
    }
    const bucket = { bucket: values.bucket, replicas };

    if (command === 'publish') {
      const dir = args[0] ?? DEFAULT_RULES_DIR;
      const report = await publishRuleFiles(nc, dir, { ...bucket, force: values.force });
      for (const name of report.created) io.out(`created    ${name}`);
      for (const name of report.updated) io.out(`updated    ${name}`);
      for (const name of report.unchanged) io.out(`unchanged  ${name}`);
      for (const { name, reason } of report.kept) io.out(`kept       ${name}: ${reason}`);
      for (const { file, error } of report.refused) io.err(`refused    ${file}: ${error}`);
      return report.refused.length > 0 ? 1 : 0;
    }

    const kv = await openRuleBucket(nc, bucket);
    switch (command) {
      case 'list': {
        const keys: string[] = [];
        for await (const key of await kv.keys('rule.>')) keys.push(key);
        if (keys.length === 0) io.out(`no rules in bucket ${values.bucket}`);
        for (const key of keys.sort()) {
          const entry = await kv.get(key);
          if (entry?.operation !== 'PUT') continue;
          const when = `rev ${entry.revision}  ${entry.created.toISOString()}`;
          try {
            const rule = decodeRule(key, entry.string());
            io.out(`${rule.name.padEnd(32)} ${rule.kind.padEnd(20)} ${when}${rule.description ? `  ${rule.description}` : ''}`);
          } catch (error) {
            io.out(`${(ruleNameOf(key) ?? key).padEnd(32)} ${'INVALID'.padEnd(20)} ${when}  ${errorMessage(error).replace(/\n\s*/g, ' ')}`);
          }
        }
        return 0;
      }
      case 'get': {
        const entry = await kv.get(ruleKey(args[0]!));
        if (entry?.operation !== 'PUT') throw new Error(`no rule named "${args[0]}" in bucket ${values.bucket}`);
        io.out(JSON.stringify(JSON.parse(entry.string()), null, 2));
        return 0;
      }
      case 'put': {
        for (const rule of toPut) {
          const revision = await kv.put(ruleKey(rule.name), canonicalJson(rule));
          io.out(`put ${rule.name} (${rule.kind}), revision ${revision}`);
        }
        return 0;
      }
      case 'delete': {
        const key = ruleKey(args[0]!);
        const entry = await kv.get(key);
        if (entry?.operation !== 'PUT') throw new Error(`no rule named "${args[0]}" in bucket ${values.bucket}`);
        await kv.delete(key);
        io.out(`deleted ${args[0]}`);
        return 0;
      }
    }
    return 2;
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`rules-cli: ${errorMessage(error)}\n${USAGE}`);
      return 2;
    }
    io.err(`rules-cli: ${errorMessage(error)}`);
    return 1;
  } finally {
    await nc?.close();
  }
}

function readInput(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file}: ${errorMessage(error)}`);
  }
}

// Run as a script, not when a test imports runRulesCli.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await runRulesCli(process.argv.slice(2), {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    env: process.env,
  });
}
