/**
 * The packaged agent (`npm run package:agent`, scripts/package-agent.ts) works on its own: built (or taken from the
 * cache), unpacked outside the repository and run with only what the tarball holds: its Node.js, its bundled JS,
 * its better-sqlite3 and its schemas, with the sample config it ships (plus EDGE_* overrides for ports and paths).
 *
 * x64: the agent starts through bin/edge-agent with a clean environment (no NODE_PATH or NODE_OPTIONS, cwd in the
 * temporary folder), is the bundled node (/proc/<pid>/exe) with the bundled native module mapped (/proc/<pid>/maps),
 * accepts valid events over HTTP with the hub unreachable, refuses an invalid one with its code and reason, and after
 * a clean stop its SQLite outbox holds the accepted events and a dead letter for the refused one.
 *
 * arm64: both binaries are aarch64 ELF files; under qemu-aarch64-static the bundled node loads the bundled
 * better-sqlite3 and writes and reads a row in a file database, then the whole agent starts, accepts one HTTP event
 * and has it in its outbox after stopping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { freePort } from '../../scripts/lib/processes.js';
import { REPO_ROOT } from '../../scripts/lib/runtime.js';
import { packageAgent, type BundleArch, type BundleResult } from '../../scripts/package-agent.js';

const LOG_DIR = join(REPO_ROOT, '.runtime', 'test-logs');
/** Where Debian's libc6-arm64-cross (with g++-aarch64-linux-gnu) puts the aarch64 loader and C library. */
const AARCH64_SYSROOT = '/usr/aarch64-linux-gnu';
const runId = Date.now().toString(36);

let bundles: Map<BundleArch, BundleResult>;
const tempDirs: string[] = [];
const children = new Set<ChildProcess>();

/** The tarball unpacked in a fresh folder under the system's temporary folder (outside the repository). */
function unpack(arch: BundleArch): string {
  const bundle = bundles.get(arch)!;
  const dir = mkdtempSync(join(tmpdir(), `agent-bundle-${arch}-`));
  tempDirs.push(dir);
  assert.ok(!dir.startsWith(REPO_ROOT), `${dir} is outside ${REPO_ROOT}`);
  const tar = spawnSync('tar', ['-xzf', bundle.tarball, '-C', dir], { encoding: 'utf8' });
  assert.equal(tar.status, 0, tar.stderr);
  return join(dir, bundle.name);
}

/** Only what a gateway's service would have: no NODE_PATH, NODE_OPTIONS or anything pointing at the repository. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: tmpdir(), LANG: 'C.UTF-8', ...extra };
}

interface RunningAgent {
  child: ChildProcess;
  http: string;
  admin: string;
  dataDir: string;
  agentId: string;
  /** Everything it wrote to stdout and stderr. */
  output: () => string;
}

async function startBundledAgent(opts: { root: string; arch: BundleArch; command: string; args: string[]; extraEnv?: Record<string, string>; timeoutMs: number }): Promise<RunningAgent> {
  const [http, admin, mqtt, nats] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const agentId = `bundle-${opts.arch}-${runId}`;
  const dataDir = join(opts.root, '..', 'data');
  mkdirSync(LOG_DIR, { recursive: true });
  const log = createWriteStream(join(LOG_DIR, `agent-${agentId}.log`), { flags: 'a' });
  const child = spawn(opts.command, opts.args, {
    cwd: join(opts.root, '..'),
    env: cleanEnv({
      EDGE_AGENTID: agentId,
      EDGE_DATADIR: dataDir,
      // Nothing listens there (a free port): the hub is unreachable, events wait in the outbox.
      EDGE_NATS__SERVERS: JSON.stringify([`nats://127.0.0.1:${nats}`]),
      EDGE_SOURCES__MQTT__HOST: '127.0.0.1',
      EDGE_SOURCES__MQTT__PORT: String(mqtt),
      EDGE_SOURCES__HTTP__HOST: '127.0.0.1',
      EDGE_SOURCES__HTTP__PORT: String(http),
      EDGE_ADMIN__HOST: '127.0.0.1',
      EDGE_ADMIN__PORT: String(admin),
      EDGE_SHUTDOWNTIMEOUTMS: '2000',
      ...opts.extraEnv,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  let stderr = '';
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    output += chunk.toString();
  });
  const agent: RunningAgent = { child, http: `http://127.0.0.1:${http}`, admin: `http://127.0.0.1:${admin}`, dataDir, agentId, output: () => output };
  const deadline = Date.now() + opts.timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) assert.fail(`the bundled agent exited with ${child.exitCode}: ${stderr}`);
    try {
      const response = await fetch(`${agent.admin}/healthz`);
      if (response.ok) return agent;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  child.kill('SIGKILL');
  assert.fail(`the bundled agent was not healthy within ${opts.timeoutMs} ms: ${stderr}`);
}

/** SIGTERM and wait for a clean exit (code 0). */
async function stopAgent(agent: RunningAgent, timeoutMs = 30_000): Promise<void> {
  const exited = new Promise<number | null>((resolve) => agent.child.once('exit', (code) => resolve(code)));
  agent.child.kill('SIGTERM');
  const timer = setTimeout(() => agent.child.kill('SIGKILL'), timeoutMs);
  const code = await exited;
  clearTimeout(timer);
  assert.equal(code, 0, 'the agent stops cleanly on SIGTERM');
}

async function post(agent: RunningAgent, body: unknown): Promise<{ status: number; body: any }> {
  const response = await fetch(`${agent.http}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

function appEvent(id: string, extra: Record<string, unknown> = {}) {
  return { event_id: id, event_type: 'video_play', user_id: 'user-1', session_id: 's-1', timestamp: new Date(Date.now() - 10_000).toISOString(), ...extra };
}

/** Events stored, outbox rows holding each of `ids` (records are msgpack: strings stay readable), dead letters. */
function readOutbox(agent: RunningAgent, ids: string[]) {
  const db = new Database(join(agent.dataDir, `outbox-${agent.agentId}.db`), { readonly: true });
  try {
    const events = (db.prepare('SELECT coalesce(sum(events), 0) AS n FROM outbox').get() as { n: number }).n;
    const rowsHolding = db.prepare('SELECT count(*) AS n FROM outbox WHERE instr(data, ?) > 0');
    const holding = new Map(ids.map((id) => [id, (rowsHolding.get(Buffer.from(id)) as { n: number }).n]));
    const deadLetters = db.prepare('SELECT code, reason, payload FROM dead_letters ORDER BY id').all() as { code: string; reason: string; payload: Buffer }[];
    return { events, holding, deadLetters };
  } finally {
    db.close();
  }
}

function fileSays(path: string): string {
  return spawnSync('file', ['-b', path], { encoding: 'utf8' }).stdout.trim();
}

before(async () => {
  const started = Date.now();
  const results = await packageAgent({ arches: ['x64', 'arm64'], log: (s) => process.stderr.write(`[agent-bundle] ${s}\n`) });
  bundles = new Map(results.map((r) => [r.arch, r]));
  process.stderr.write(`[agent-bundle] bundles ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
});

after(() => {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe('packaged agent, linux-x64', { skip: process.arch !== 'x64' && 'runs on x64 hosts' }, () => {
  let root: string;
  let agent: RunningAgent;
  const ids = [0, 1, 2].map((i) => `bundle-x64-${runId}-${i}`);
  const badId = `bundle-x64-${runId}-bad`;

  before(() => {
    root = unpack('x64');
  });

  test('holds the runtime, the bundled agent, the native module, the schemas and the gateway files', () => {
    for (const path of ['bin/node', 'bin/edge-agent', 'bin/edge-dlq', 'lib/edge-agent.mjs', 'lib/edge-dlq.mjs', 'config.example.yaml', 'edge-agent.service', 'README.txt', 'schemas/app.event/v1.json']) {
      assert.ok(existsSync(join(root, path)), `${path} is in the bundle`);
    }
    assert.match(fileSays(join(root, 'bin/node')), /ELF 64-bit LSB .*x86-64/);
    assert.match(fileSays(join(root, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')), /ELF 64-bit LSB .*x86-64/);
    const unit = readFileSync(join(root, 'edge-agent.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/opt\/edge-agent\/bin\/edge-agent --config \/etc\/edge-agent\/agent.yaml$/m);
    assert.doesNotMatch(unit, /\/opt\/pipeline|\/usr\/bin\/node/);
    const version = spawnSync(join(root, 'bin/node'), ['--version'], { encoding: 'utf8', env: cleanEnv({}) });
    assert.equal(version.stdout.trim(), `v${process.versions.node}`);
  });

  test('runs from the unpacked folder alone: accepts valid events into its outbox, refuses an invalid one', async () => {
    agent = await startBundledAgent({ root, arch: 'x64', command: join(root, 'bin', 'edge-agent'), args: ['--config', join(root, 'config.example.yaml')], timeoutMs: 30_000 });
    const pid = agent.child.pid!;
    // The launcher exec'd the bundled node, and the SQLite module in use is the bundle's.
    assert.equal(readlinkSync(`/proc/${pid}/exe`), join(root, 'bin', 'node'));
    const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    assert.ok(maps.includes(join(root, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')), 'the bundled better_sqlite3.node is loaded');
    assert.ok(!maps.includes(REPO_ROOT), 'nothing of the repository is mapped');

    const health = (await (await fetch(`${agent.admin}/healthz`)).json()) as { hubConnected: boolean };
    assert.equal(health.hubConnected, false, 'the hub is unreachable');

    const ok = await post(agent, ids.map((id) => appEvent(id)));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.accepted, 3);

    const bad = await post(agent, [appEvent(badId, { user_id: 5 })]);
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.equal(bad.body.accepted, 0);
    assert.equal(bad.body.rejected[0].code, 'EDGE_ERR_SCHEMA_INVALID');
    assert.equal(bad.body.rejected[0].field, '/user_id');
    assert.match(bad.body.rejected[0].reason, /\/user_id must be string/);

    const metrics = await (await fetch(`${agent.admin}/metrics`)).text();
    assert.match(metrics, /^edge_schema_versions(\{[^}]*\})? [1-9]/m, 'the schemas/ folder of the bundle was loaded');

    await stopAgent(agent);
    // Only the agent's JSON log lines: no module of the bundle ran as a CLI of its own (usage texts and the like).
    for (const line of agent.output().split('\n').filter((l) => l.trim() !== '')) {
      assert.doesNotThrow(() => JSON.parse(line), `not a log line: ${line}`);
    }
    assert.match(agent.output(), /"msg":"edge agent stopped"/);
    const outbox = readOutbox(agent, [...ids, badId]);
    assert.equal(outbox.events, 3, 'the three accepted events wait in the outbox');
    for (const id of ids) assert.equal(outbox.holding.get(id), 1, `${id} is in the outbox`);
    assert.equal(outbox.holding.get(badId), 0, 'the refused event is not');
    assert.equal(outbox.deadLetters.length, 1);
    assert.equal(outbox.deadLetters[0]!.code, 'EDGE_ERR_SCHEMA_INVALID');
    assert.ok(outbox.deadLetters[0]!.payload.toString().includes(badId), 'the dead letter keeps the refused payload');
  });

  test('the bundled dead-letter CLI reads the outbox', () => {
    const result = spawnSync(join(root, 'bin', 'edge-dlq'), ['--db', join(agent.dataDir, `outbox-${agent.agentId}.db`), 'list', '--json'], { encoding: 'utf8', env: cleanEnv({}), cwd: tmpdir() });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /EDGE_ERR_SCHEMA_INVALID/);
  });
});

describe('packaged agent, linux-arm64 (under qemu-aarch64-static)', () => {
  let root: string;
  // On an arm64 host the binaries run as they are; elsewhere through user-mode emulation with Debian's aarch64 libc.
  const emulated = process.arch !== 'arm64';
  const runArm = (args: string[]) => (emulated ? { command: 'qemu-aarch64-static', args } : { command: args[0]!, args: args.slice(1) });
  const armEnv: Record<string, string> = emulated ? { QEMU_LD_PREFIX: AARCH64_SYSROOT } : {};

  before(() => {
    root = unpack('arm64');
  });

  test('holds aarch64 binaries', () => {
    assert.match(fileSays(join(root, 'bin/node')), /ELF 64-bit LSB .*ARM aarch64/);
    assert.match(fileSays(join(root, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')), /ELF 64-bit LSB .*ARM aarch64/);
  });

  test('the bundled node loads the bundled better-sqlite3 and writes and reads a file database', () => {
    const dbPath = join(root, '..', 'check.db');
    const script = [
      "const Database = require('better-sqlite3');",
      `const db = new Database(${JSON.stringify(dbPath)});`,
      "db.pragma('journal_mode = WAL');",
      "db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');",
      "db.prepare('INSERT INTO t (v) VALUES (?)').run('hello from ' + process.arch);",
      "const row = db.prepare('SELECT id, v FROM t').get();",
      'db.close();',
      "console.log(JSON.stringify({ arch: process.arch, modules: process.versions.modules, sqlite: require.resolve('better-sqlite3'), row }));",
    ].join('\n');
    const { command, args } = runArm([join(root, 'bin', 'node'), '-e', script]);
    const result = spawnSync(command, args, { cwd: root, encoding: 'utf8', env: cleanEnv(armEnv), timeout: 60_000 });
    assert.equal(result.status, 0, result.stderr);
    const out = JSON.parse(result.stdout.trim()) as { arch: string; modules: string; sqlite: string; row: { id: number; v: string } };
    assert.equal(out.arch, 'arm64');
    assert.equal(out.modules, process.versions.modules, 'same Node ABI the module was built for');
    assert.ok(out.sqlite.startsWith(join(root, 'node_modules')), `better-sqlite3 from the bundle (${out.sqlite})`);
    assert.deepEqual(out.row, { id: 1, v: 'hello from arm64' });
  });

  test('the whole agent starts under emulation and stores an HTTP event', async () => {
    const id = `bundle-arm64-${runId}-0`;
    const { command, args } = runArm([join(root, 'bin', 'node'), join(root, 'lib', 'edge-agent.mjs'), '--config', join(root, 'config.example.yaml')]);
    const agent = await startBundledAgent({ root, arch: 'arm64', command, args, extraEnv: armEnv, timeoutMs: 90_000 });
    const ok = await post(agent, appEvent(id));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.accepted, 1);
    await stopAgent(agent, 60_000);
    const outbox = readOutbox(agent, [id]);
    assert.equal(outbox.events, 1);
    assert.equal(outbox.holding.get(id), 1);
  });
});
