/**
 * `npm test` — runs the test suites with Node's built-in test runner.
 *
 *   npm test                      test/unit, then test/integration, then test/faults (every *.test.ts)
 *   npm test -- unit              only test/unit (no servers are started)
 *   npm test -- <substring>...    only files whose path contains one of the substrings
 *   npm test -- <file or dir>...  these files / every *.test.ts under these directories
 *
 * Unless every selected file is a unit test, a fresh stack (3 NATS nodes + QuestDB, TEST_PORTS, data wiped) is
 * started in .runtime/test-stack first and stopped at the end (also on Ctrl-C). Tests find it through:
 *   PIPELINE_NATS_URLS          nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224
 *   PIPELINE_NATS_MONITOR_URLS  http://127.0.0.1:18222,... (monitoring endpoints, same order)
 *   PIPELINE_QUESTDB_HTTP       http://127.0.0.1:19000
 *   PIPELINE_QUESTDB_PG_PORT    18812
 *   PIPELINE_STACK_DIR          absolute path of .runtime/test-stack (attachStack / stackFromEnv in scripts/lib/stack.ts)
 *
 * Files run one at a time (--test-concurrency=1), 10 min timeout per test file; the runner's output goes straight to
 * stdout and this script exits with its exit code. Our own progress lines go to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';

import { ensureRuntime, ensureTestTools, REPO_ROOT } from './lib/runtime.js';
import { shiftPorts, startStack, stopStack, TEST_PORTS as BASE_TEST_PORTS, TEST_STACK_DIR as BASE_TEST_STACK_DIR, wipeStack, type StackHandle, type StackPorts } from './lib/stack.js';

// PIPELINE_TEST_PORT_OFFSET=N moves every port of the test stack by N and gives it its own directory, so that
// several checkouts (or developers on one machine) can run `npm test` at the same time.
const PORT_OFFSET = Number(process.env.PIPELINE_TEST_PORT_OFFSET ?? 0);
const TEST_PORTS: StackPorts = shiftPorts(BASE_TEST_PORTS, PORT_OFFSET);
const TEST_STACK_DIR = PORT_OFFSET === 0 ? BASE_TEST_STACK_DIR : `${BASE_TEST_STACK_DIR}-${PORT_OFFSET}`;

const SUITES = ['unit', 'integration', 'faults'] as const;
const UNIT_DIR = join(REPO_ROOT, 'test', 'unit');

function say(s: string): void {
  process.stderr.write(`[test] ${s}\n`);
}

/** Every *.test.ts under `dir`, sorted, skipping node_modules and dot-directories. */
function findTests(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    const entries = readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const full = join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && !e.name.startsWith('.')) walk(full);
      } else if (e.isFile() && e.name.endsWith('.test.ts')) {
        out.push(full);
      }
    }
  };
  if (existsSync(dir) && statSync(dir).isDirectory()) walk(dir);
  return out;
}

function isUnder(file: string, dir: string): boolean {
  return file.startsWith(dir + sep);
}

function selectFiles(args: string[]): { files: string[]; filtered: boolean } {
  const unitOnly = args.includes('unit');
  const rest = args.filter((a) => a !== 'unit');
  const explicit: string[] = [];
  const substrings: string[] = [];
  for (const a of rest) {
    const p = resolve(a);
    // A folder without tests (`npm test -- deploy` names the deploy/ folder) is meant as a substring, not as "nothing
    // explicit", which would run every suite.
    const inFolder = existsSync(p) && statSync(p).isDirectory() ? findTests(p) : [];
    if (existsSync(p) && (inFolder.length > 0 || !statSync(p).isDirectory())) {
      if (statSync(p).isDirectory()) explicit.push(...inFolder);
      else explicit.push(p);
    } else {
      substrings.push(a);
    }
  }
  const suites = unitOnly ? ['unit'] : SUITES;
  let files = explicit.length > 0 && substrings.length === 0 && !unitOnly
    ? []
    : suites.flatMap((s) => findTests(join(REPO_ROOT, 'test', s)));
  if (substrings.length > 0) {
    files = files.filter((f) => {
      const rel = relative(REPO_ROOT, f);
      return substrings.some((sub) => rel.includes(sub) || f.includes(sub));
    });
  }
  const all = [...new Set([...files, ...explicit])];
  return { files: all, filtered: rest.length > 0 };
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  if (signal) return 128 + (osConstants.signals[signal] ?? 0);
  return 1;
}

async function main(): Promise<number> {
  const { files, filtered } = selectFiles(process.argv.slice(2));
  if (files.length === 0) {
    if (filtered) {
      say(`no test files match ${process.argv.slice(2).join(' ')}`);
      return 1;
    }
    say('no test files found (looked for *.test.ts in test/unit, test/integration, test/faults); nothing to run');
    return 0;
  }
  const needsStack = files.some((f) => !isUnder(f, UNIT_DIR));
  say(`${files.length} test file(s)${needsStack ? '' : ' (unit only, no stack)'}`);

  let stack: StackHandle | null = null;
  let child: ChildProcess | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let stopping: Promise<void> | null = null;
  const stopStackOnce = (): Promise<void> => {
    stopping ??= (async () => {
      if (!needsStack) return;
      const t = Date.now();
      await stopStack(TEST_STACK_DIR);
      say(`stack stopped in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    })();
    return stopping;
  };

  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) {
      // Second Ctrl-C: do not wait for the test runner any longer.
      child?.kill('SIGKILL');
      return;
    }
    interrupted = sig;
    say(`${sig}: stopping the tests and the stack`);
    if (child && child.exitCode === null) {
      child.kill(sig);
      setTimeout(() => child?.kill('SIGKILL'), 10_000).unref();
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (needsStack) {
      ensureTestTools((s) => say(s));
      const runtime = await ensureRuntime((s) => say(s));
      // Leftovers of an interrupted run in the same directory (pid files; nothing else is touched).
      await stopStack(TEST_STACK_DIR);
      wipeStack(TEST_STACK_DIR);
      const t = Date.now();
      say(`starting the test stack in ${relative(REPO_ROOT, TEST_STACK_DIR)} (NATS ${TEST_PORTS.natsClient.join(',')}, QuestDB ${TEST_PORTS.questdbHttp}/${TEST_PORTS.questdbPg})`);
      stack = await startStack({ dir: TEST_STACK_DIR, ports: TEST_PORTS, detached: false, runtime, log: say });
      say(`stack healthy in ${((Date.now() - t) / 1000).toFixed(1)} s`);
      Object.assign(env, stack.env());
    }
    if (interrupted) return exitCodeOf(null, interrupted);

    const args = [
      '--import',
      'tsx',
      '--test',
      '--test-concurrency=1',
      '--test-timeout=600000',
      ...files.map((f) => (isUnder(f, REPO_ROOT) ? relative(REPO_ROOT, f) : f)),
    ];
    const t = Date.now();
    const code = await new Promise<number>((resolvePromise, reject) => {
      const c = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: 'inherit' });
      child = c;
      c.once('error', reject);
      c.once('exit', (code, signal) => resolvePromise(exitCodeOf(code, signal)));
    });
    say(`test runner exited with code ${code} after ${((Date.now() - t) / 1000).toFixed(1)} s`);
    return interrupted ? exitCodeOf(null, interrupted) : code;
  } finally {
    await stopStackOnce();
  }
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    say(`error: ${err instanceof Error ? err.message : String(err)}`);
    try {
      await stopStack(TEST_STACK_DIR);
    } catch {
      // already reported the main error
    }
    process.exit(1);
  },
);
