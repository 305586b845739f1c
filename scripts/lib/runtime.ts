/**
 * Fetches (or finds) the servers the local stack needs: nats-server, the QuestDB jar, and a Java runtime.
 *
 * Only package registries are reachable on our machines, so nats-server is built from the Go module proxy and
 * QuestDB comes from Maven Central. Results are cached under `<repo>/.runtime/` (git-ignored).
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, mkdirSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** nats-server version built when no usable binary is found. */
export const NATS_SERVER_VERSION = '2.15.2';
/** Oldest nats-server accepted from `.runtime/bin` or PATH. */
export const NATS_SERVER_MIN_VERSION = '2.12.0';
/** QuestDB version fetched from Maven Central (`org.questdb:questdb`). */
export const QUESTDB_VERSION = '9.3.4';
/** Oldest Java major version QuestDB 9.x runs on. */
export const JAVA_MIN_MAJOR = 17;

/** Repository root, resolved from this file's location (scripts/lib/runtime.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RUNTIME_DIR = join(REPO_ROOT, '.runtime');
export const RUNTIME_BIN_DIR = join(RUNTIME_DIR, 'bin');
export const QUESTDB_DIR = join(RUNTIME_DIR, 'questdb');

export interface Runtime {
  /** Absolute path of the nats-server binary. */
  natsServer: string;
  /** Absolute path of the QuestDB jar. */
  questdbJar: string;
  /** Java executable (absolute path when found on PATH). */
  java: string;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: NodeJS.ErrnoException;
}

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      const err = error as (NodeJS.ErrnoException & { code?: string | number }) | null;
      resolvePromise({
        code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
        stdout,
        stderr,
        ...(err && typeof err.code === 'string' ? { error: err } : {}),
      });
    });
  });
}

/** Runs a command with stdio inherited (its output is the progress report); rejects on a non-zero exit. */
function runInherit(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ENOENT'
          ? new Error(`'${cmd}' is not on PATH; it is needed to fetch the local stack's servers`)
          : err,
      );
    });
    child.once('exit', (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`'${cmd} ${args.join(' ')}' failed (${signal ?? `exit code ${String(code)}`})`));
    });
  });
}

/** Compares dotted versions numerically: <0, 0, >0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Absolute path of `name` on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Version reported by `nats-server --version` (e.g. "2.15.2"), or null if it does not run. */
async function natsServerVersion(bin: string): Promise<string | null> {
  const r = await run(bin, ['--version'], 10_000);
  if (r.code !== 0) return null;
  const m = /v?(\d+\.\d+\.\d+)/.exec(r.stdout + r.stderr);
  return m?.[1] ?? null;
}

async function ensureNatsServer(log: (s: string) => void): Promise<string> {
  const cached = join(RUNTIME_BIN_DIR, 'nats-server');
  if (existsSync(cached)) {
    const v = await natsServerVersion(cached);
    if (v && compareVersions(v, NATS_SERVER_MIN_VERSION) >= 0) return cached;
  }
  const onPath = which('nats-server');
  if (onPath) {
    const v = await natsServerVersion(onPath);
    if (v && compareVersions(v, NATS_SERVER_MIN_VERSION) >= 0) return onPath;
  }
  if (!which('go')) {
    throw new Error(
      `nats-server >= ${NATS_SERVER_MIN_VERSION} not found and 'go' is not on PATH to build it. ` +
        `Install Go (https://go.dev/dl or the distro package) and retry.`,
    );
  }
  mkdirSync(RUNTIME_BIN_DIR, { recursive: true });
  log(`building nats-server v${NATS_SERVER_VERSION} with 'go install' into ${RUNTIME_BIN_DIR} (about 35 s cold)...`);
  await runInherit('go', ['install', `github.com/nats-io/nats-server/v2@v${NATS_SERVER_VERSION}`], {
    env: { ...process.env, GOBIN: RUNTIME_BIN_DIR },
  });
  const v = await natsServerVersion(cached);
  if (!v) throw new Error(`built ${cached} but it does not run ('--version' failed)`);
  return cached;
}

const GOFAKES3_VERSION = '1.2.0';

/**
 * An S3-compatible server for the data lake test (gofakes3, in memory), built with `go install` into .runtime/bin
 * like nats-server (about 15 s once). Not part of the product: any S3-compatible store is a target.
 */
export async function ensureS3TestServer(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<string> {
  const cached = join(RUNTIME_BIN_DIR, 'gofakes3');
  if (existsSync(cached)) return cached;
  if (!which('go')) throw new Error("the S3 test server (gofakes3) is missing and 'go' is not on PATH to build it");
  mkdirSync(RUNTIME_BIN_DIR, { recursive: true });
  log(`building gofakes3 v${GOFAKES3_VERSION} with 'go install' into ${RUNTIME_BIN_DIR} (about 15 s cold)...`);
  await runInherit('go', ['install', `github.com/johannesboyne/gofakes3/cmd/gofakes3@v${GOFAKES3_VERSION}`], { env: { ...process.env, GOBIN: RUNTIME_BIN_DIR } });
  return cached;
}

async function ensureQuestdbJar(log: (s: string) => void): Promise<string> {
  const jar = join(QUESTDB_DIR, `questdb-${QUESTDB_VERSION}.jar`);
  if (existsSync(jar)) return jar;
  if (!which('mvn')) {
    throw new Error(
      `${jar} is missing and 'mvn' is not on PATH to fetch it from Maven Central. ` +
        `Install Maven (apt-get install -y maven) and retry.`,
    );
  }
  mkdirSync(QUESTDB_DIR, { recursive: true });
  log(`fetching org.questdb:questdb:${QUESTDB_VERSION} from Maven Central into ${QUESTDB_DIR}...`);
  await runInherit(
    'mvn',
    ['-q', '-U', 'dependency:copy', `-Dartifact=org.questdb:questdb:${QUESTDB_VERSION}`, `-DoutputDirectory=${QUESTDB_DIR}`],
    // dependency:copy needs no project; run outside the repo so no pom.xml is picked up.
    { cwd: QUESTDB_DIR },
  );
  if (!existsSync(jar)) throw new Error(`mvn finished but ${jar} is not there`);
  return jar;
}

async function ensureJava(): Promise<string> {
  const java = which('java');
  const hint = `Install a Java ${JAVA_MIN_MAJOR}+ runtime: apt-get install -y openjdk-17-jre-headless`;
  if (!java) throw new Error(`'java' is not on PATH; QuestDB needs Java ${JAVA_MIN_MAJOR}+. ${hint}`);
  const r = await run(java, ['-version'], 20_000);
  // `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_402" for Java 8) on stderr.
  const m = /version "(\d+)(?:\.(\d+))?/.exec(r.stderr + r.stdout);
  if (!m) throw new Error(`could not read the version from '${java} -version'. ${hint}`);
  const major = m[1] === '1' ? Number(m[2] ?? '0') : Number(m[1]);
  if (major < JAVA_MIN_MAJOR) {
    throw new Error(`${java} is Java ${major}; QuestDB ${QUESTDB_VERSION} needs Java ${JAVA_MIN_MAJOR}+. ${hint}`);
  }
  return java;
}

/**
 * Makes sure nats-server, the QuestDB jar and Java are available, fetching or building what is missing.
 * Progress lines go to `log` (stderr by default); it is quiet when everything is cached.
 */
/** Programs the integration and fault tests run, with the Debian package that has each. */
const TEST_TOOLS: ReadonlyArray<{ command: string; debianPackage: string; usedBy: string }> = [
  { command: 'openssl', debianPackage: 'openssl', usedBy: 'the security test (certificates)' },
  { command: 'ip', debianPackage: 'iproute2', usedBy: 'the partition test (network namespaces)' },
  { command: 'chromium', debianPackage: 'chromium', usedBy: 'the dashboard test (headless browser)' },
  // The packaged agent (npm run package:agent) and its test: the arm64 native module is cross-compiled, the bundle's
  // binaries are checked with `file`, and the arm64 bundle runs under user-mode emulation.
  { command: 'aarch64-linux-gnu-g++', debianPackage: 'g++-aarch64-linux-gnu', usedBy: 'the agent bundle (arm64 SQLite module)' },
  { command: 'file', debianPackage: 'file', usedBy: 'the agent bundle (architecture check)' },
  { command: 'qemu-aarch64-static', debianPackage: 'qemu-user-static', usedBy: 'the agent bundle test (arm64 under emulation)' },
];

/**
 * Installs the tests' system programs that are missing, with Debian's apt when running as root (as CI does);
 * otherwise names what to install and stops.
 */
export function ensureTestTools(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): void {
  ensureDebianTools(TEST_TOOLS, log);
}

/** Installs the programs of `tools` that are missing (apt-get as root), or names what to install and throws. */
export function ensureDebianTools(
  tools: ReadonlyArray<{ command: string; debianPackage: string; usedBy: string }>,
  log: (s: string) => void = (s) => process.stderr.write(`${s}\n`),
): void {
  const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
  const missing = tools.filter((tool) => !has(tool.command));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((tool) => tool.debianPackage))];
  const why = missing.map((tool) => `${tool.command} for ${tool.usedBy}`).join(', ');
  if (process.getuid?.() !== 0 || !has('apt-get')) {
    throw new Error(`${why} missing: install ${packages.join(' ')} (Debian: apt-get install ${packages.join(' ')})`);
  }
  log(`installing ${packages.join(', ')} with apt-get (${why})...`);
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...packages]]) {
    const result = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (result.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${result.status})`);
  }
}

export async function ensureRuntime(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<Runtime> {
  // Java first: it is the only one we cannot fetch, so fail before spending time on the others.
  const java = await ensureJava();
  const natsServer = await ensureNatsServer(log);
  const questdbJar = await ensureQuestdbJar(log);
  return { natsServer, questdbJar, java };
}
