/**
 * `npm run package:agent [-- --arch x64|arm64|all] [--node-version 20.20.2]`: builds a self-contained edge agent
 * for Linux gateways, one tarball per architecture:
 *
 *   dist/edge-agent-<version>-linux-<arch>.tar.gz
 *     edge-agent-<version>-linux-<arch>/
 *       bin/node                       the official Node.js runtime (npm package node-linux-<arch>)
 *       bin/edge-agent, bin/edge-dlq   launchers (sh): the bundled node running lib/*.mjs
 *       lib/edge-agent.mjs             the agent and every JS dependency in one ES module (esbuild)
 *       lib/edge-dlq.mjs               the dead-letter CLI (list, show, redrive)
 *       node_modules/better-sqlite3    its JS, and the native module built for <arch> (only native part)
 *       schemas/                       the event schemas (found as ../schemas from lib/, like from the sources)
 *       config.example.yaml            a gateway's config (deploy/package/config.example.yaml)
 *       edge-agent.service             deploy/systemd/edge-agent.service, adapted to /opt/edge-agent
 *       README.txt                     how to install it
 *
 * The gateway needs nothing else (glibc >= the version README.txt names). Only package registries are reachable
 * from our machines, so: Node comes from the npm registry (`npm pack node-linux-<arch>@<version>`, the official
 * binaries, with their headers), the x64 SQLite module from node_modules (built by `npm install` on this x64 host),
 * and the arm64 one is cross-compiled from better-sqlite3's npm package with Debian's g++-aarch64-linux-gnu and
 * node-gyp against the headers of that same Node. Downloads and native builds are cached in .runtime/package-agent,
 * so only the first build of an architecture is slow (arm64: about 4 minutes of compiling SQLite on 2 cores).
 *
 * Every binary that goes in is checked with `file` to be an ELF of the tarball's architecture; a mismatch fails
 * the build.
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';

import { ensureDebianTools, REPO_ROOT, RUNTIME_DIR } from './lib/runtime.js';

export type BundleArch = 'x64' | 'arm64';
export const BUNDLE_ARCHES: readonly BundleArch[] = ['x64', 'arm64'];

/** Cache of downloads and native builds (git-ignored). */
export const PACKAGE_CACHE_DIR = join(RUNTIME_DIR, 'package-agent');
/** Where tarballs go, and their unpacked staging trees (dist/agent-bundle/<name>/). */
export const DIST_DIR = join(REPO_ROOT, 'dist');

interface ArchInfo {
  /** What `file` says about an ELF of this architecture. */
  fileMatch: RegExp;
  /** Cross toolchain prefix when the host is another architecture (Debian's g++-<triplet> package). */
  triplet: string;
  debianCompiler: string;
}

const ARCH: Record<BundleArch, ArchInfo> = {
  x64: { fileMatch: /ELF 64-bit LSB .*x86-64/, triplet: 'x86_64-linux-gnu', debianCompiler: 'g++-x86-64-linux-gnu' },
  arm64: { fileMatch: /ELF 64-bit LSB .*ARM aarch64/, triplet: 'aarch64-linux-gnu', debianCompiler: 'g++-aarch64-linux-gnu' },
};

export interface PackageOptions {
  arches?: readonly BundleArch[];
  /** Node.js version shipped; default: the one running this script (whose ABI node_modules' module was built for). */
  nodeVersion?: string;
  log?: (s: string) => void;
}

export interface BundleResult {
  arch: BundleArch;
  /** Absolute path of the .tar.gz. */
  tarball: string;
  /** Name of the tarball's top folder. */
  name: string;
  bytes: number;
  /** Newest GLIBC_x.y symbol version the native code needs. */
  glibc: string;
  seconds: number;
}

function run(command: string, args: string[], options: SpawnSyncOptions = {}): string {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
  if (result.error) throw new Error(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.status !== 0) {
    const output = `${String(result.stdout ?? '')}${String(result.stderr ?? '')}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`${command} ${args.join(' ')} failed (exit ${result.status}):\n${output}`);
  }
  return String(result.stdout ?? '');
}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

/** Fails unless `file` names `path` an ELF of `arch`. Returns what `file` said. */
export function checkElfArch(path: string, arch: BundleArch): string {
  const description = run('file', ['-b', path]).trim();
  if (!ARCH[arch].fileMatch.test(description)) {
    throw new Error(`${path} is not a linux-${arch} binary: file says "${description}"`);
  }
  return description;
}

/** Newest GLIBC_2.N symbol version named in an ELF file (what the gateway's C library must provide). */
function glibcNeeded(paths: string[]): string {
  let best = [0, 0];
  for (const path of paths) {
    for (const m of readFileSync(path).toString('latin1').matchAll(/GLIBC_(\d+)\.(\d+)/g)) {
      const v = [Number(m[1]), Number(m[2])];
      if (v[0]! > best[0]! || (v[0] === best[0] && v[1]! > best[1]!)) best = v;
    }
  }
  return `${best[0]}.${best[1]}`;
}

/** `npm pack <spec>` into the download cache, once; returns the .tgz path. */
function npmPack(spec: string, fileName: string, log: (s: string) => void): string {
  const dir = join(PACKAGE_CACHE_DIR, 'downloads');
  const path = join(dir, fileName);
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true });
  log(`fetching ${spec} from the npm registry...`);
  const partial = join(dir, 'partial');
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial);
  run('npm', ['pack', spec, '--pack-destination', partial, '--silent']);
  renameSync(join(partial, fileName), path);
  rmSync(partial, { recursive: true, force: true });
  return path;
}

/** An npm tarball unpacked (its `package/` folder) under the cache, once. */
function unpacked(tgz: string, name: string): string {
  const dir = join(PACKAGE_CACHE_DIR, name);
  if (existsSync(join(dir, 'package.json'))) return dir;
  const partial = `${dir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  run('tar', ['-xzf', tgz, '-C', partial, '--strip-components=1']);
  rmSync(dir, { recursive: true, force: true });
  renameSync(partial, dir);
  return dir;
}

/** The official Node.js of `arch` (binary and headers), from the npm registry's node-linux-<arch> package. */
function nodeDistribution(arch: BundleArch, version: string, log: (s: string) => void): string {
  const tgz = npmPack(`node-linux-${arch}@${version}`, `node-linux-${arch}-${version}.tgz`, log);
  const dir = unpacked(tgz, `node-v${version}-linux-${arch}`);
  checkElfArch(join(dir, 'bin', 'node'), arch);
  return dir;
}

function nodeGypScript(): string {
  const candidates = [join(REPO_ROOT, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' });
  if (npmRoot.status === 0) candidates.push(join(npmRoot.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(resolve(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`node-gyp not found (looked at ${candidates.join(', ')}); it comes with npm`);
  return found;
}

/**
 * better_sqlite3.node for `arch` and this Node version: node_modules' own build when it is for this host's
 * architecture and Node ABI, else compiled from better-sqlite3's npm package with the `arch` cross toolchain and
 * the headers of the Node that will run it. Cached, stripped.
 */
function sqliteNative(arch: BundleArch, nodeVersion: string, nodeDir: string, log: (s: string) => void): string {
  const bsVersion = readJson<{ version: string }>(join(REPO_ROOT, 'node_modules', 'better-sqlite3', 'package.json')).version;
  const cacheDir = join(PACKAGE_CACHE_DIR, 'native', `better-sqlite3-${bsVersion}-node-v${nodeVersion}-linux-${arch}`);
  const cached = join(cacheDir, 'better_sqlite3.node');
  if (existsSync(cached)) return cached;

  const hostBuild = join(REPO_ROOT, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node');
  const sameAbi = nodeVersion.split('.')[0] === process.versions.node.split('.')[0];
  mkdirSync(cacheDir, { recursive: true });
  const partial = `${cached}.partial`;
  let strip = 'strip';
  if (arch === process.arch && sameAbi && existsSync(hostBuild)) {
    log(`linux-${arch}: better-sqlite3 ${bsVersion} native module from node_modules`);
    copyFileSync(hostBuild, partial);
  } else {
    const { triplet, debianCompiler } = ARCH[arch];
    const cross = arch !== process.arch;
    if (cross) {
      ensureDebianTools([{ command: `${triplet}-g++`, debianPackage: debianCompiler, usedBy: `the ${arch} SQLite module` }], log);
      strip = `${triplet}-strip`;
    }
    const source = unpacked(npmPack(`better-sqlite3@${bsVersion}`, `better-sqlite3-${bsVersion}.tgz`, log), `better-sqlite3-${bsVersion}-src`);
    const work = join(PACKAGE_CACHE_DIR, 'native', `build-${arch}`);
    rmSync(work, { recursive: true, force: true });
    cpSync(source, work, { recursive: true });
    const t = Date.now();
    log(`linux-${arch}: compiling better-sqlite3 ${bsVersion} for Node ${nodeVersion}${cross ? ` with ${triplet}-g++` : ''} (a few minutes, once)...`);
    const toolchain: NodeJS.ProcessEnv = cross
      ? { CC: `${triplet}-gcc`, CXX: `${triplet}-g++`, LINK: `${triplet}-g++`, AR: `${triplet}-ar`, CC_host: 'gcc', CXX_host: 'g++', LINK_host: 'g++', AR_host: 'ar' }
      : {};
    run(process.execPath, [nodeGypScript(), 'rebuild', '--release', `--arch=${arch}`, `--nodedir=${nodeDir}`, '-j', '2'], {
      cwd: work,
      env: { ...process.env, ...toolchain, npm_config_jobs: '2' },
    });
    log(`linux-${arch}: compiled in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    copyFileSync(join(work, 'build', 'Release', 'better_sqlite3.node'), partial);
    rmSync(work, { recursive: true, force: true });
  }
  // Debug symbols are most of an unstripped module; the gateway does not need them.
  if (spawnSync('sh', ['-c', `command -v ${strip}`], { stdio: 'ignore' }).status === 0) run(strip, ['--strip-unneeded', partial]);
  checkElfArch(partial, arch);
  renameSync(partial, cached);
  return cached;
}

/** The agent and the dead-letter CLI as ES modules with every JS dependency inside (better-sqlite3 stays outside). */
async function bundleJs(outDir: string): Promise<void> {
  const common = {
    bundle: true,
    platform: 'node' as const,
    target: 'node20',
    format: 'esm' as const,
    // The native module is loaded from node_modules/better-sqlite3 next to lib/ (also by the WAL checkpointer's
    // worker, which resolves it by name). msgpackr-extract is msgpackr's optional native decoder: without it msgpackr
    // uses its JS code, as it does when the package is missing.
    external: ['better-sqlite3', 'msgpackr-extract'],
    // CommonJS dependencies call require() for Node's modules; an ES module has none, so give it one.
    // Every module's import.meta.url becomes the bundle's URL with a fragment: relative URLs (../schemas from lib/,
    // createRequire) resolve the same, and `import.meta.url === pathToFileURL(process.argv[1]).href` (a module's
    // own CLI, e.g. mqtt-auth.ts hash-password) is false, as it is for an imported module, instead of true for all.
    banner: {
      js: [
        "import { createRequire as __bundleCreateRequire } from 'node:module';",
        'const require = __bundleCreateRequire(import.meta.url);',
        "const __bundleModuleUrl = `${import.meta.url}#bundled`;",
      ].join('\n'),
    },
    define: { 'import.meta.url': '__bundleModuleUrl' },
    legalComments: 'linked' as const,
    logLevel: 'warning' as const,
    absWorkingDir: REPO_ROOT,
  };
  await build({ ...common, entryPoints: [join(REPO_ROOT, 'edge-agent', 'src', 'main.ts')], outfile: join(outDir, 'edge-agent.mjs') });
  await build({
    ...common,
    stdin: {
      contents: "import { main } from './edge-agent/src/cli/dead-letters.ts';\nprocess.exitCode = await main(process.argv.slice(2));\n",
      resolveDir: REPO_ROOT,
      sourcefile: 'edge-dlq.ts',
      loader: 'ts',
    },
    outfile: join(outDir, 'edge-dlq.mjs'),
  });
}

function launcher(script: string, what: string): string {
  return [
    '#!/bin/sh',
    `# ${what}: the bundled Node.js running lib/${script}. Arguments are passed on.`,
    'dir=$(dirname "$(readlink -f "$0")")',
    `exec "$dir/node" "$dir/../lib/${script}" "$@"`,
    '',
  ].join('\n');
}

/** deploy/systemd/edge-agent.service for the bundle in /opt/edge-agent (no repository, no system Node). */
export function bundleUnit(unit: string): string {
  const edits: Array<[RegExp, string]> = [
    [/^# Install:[^\n]*\n(?:#(?! {3}useradd)[^\n]*\n)*/m,
      '# Install: the bundle unpacked in /opt/edge-agent (README.txt there), the config in /etc/edge-agent/agent.yaml,\n' +
      '# secrets (nkey seed, CA) in /etc/edge-agent/ readable by the edge-agent user, overrides in\n' +
      '# /etc/edge-agent/agent.env (EDGE_* variables).\n'],
    [/^Documentation=.*$/m, 'Documentation=file:///opt/edge-agent/README.txt'],
    [/^WorkingDirectory=.*$/m, 'WorkingDirectory=/opt/edge-agent'],
    [/^ExecStart=.*$/m, 'ExecStart=/opt/edge-agent/bin/edge-agent --config /etc/edge-agent/agent.yaml'],
  ];
  let out = unit;
  for (const [pattern, replacement] of edits) {
    if (!pattern.test(out)) throw new Error(`deploy/systemd/edge-agent.service changed: ${pattern} no longer matches; update scripts/package-agent.ts`);
    out = out.replace(pattern, replacement);
  }
  if (/\/opt\/pipeline|\/usr\/bin\/node/.test(out)) throw new Error('the bundle\'s edge-agent.service still names /opt/pipeline or /usr/bin/node');
  return out;
}

function dirBytes(path: string): number {
  const s = statSync(path);
  if (!s.isDirectory()) return s.size;
  return readdirSync(path).reduce((sum, entry) => sum + dirBytes(join(path, entry)), 0);
}

export async function packageAgent(options: PackageOptions = {}): Promise<BundleResult[]> {
  const log = options.log ?? ((s: string) => process.stderr.write(`[package-agent] ${s}\n`));
  const arches = options.arches ?? BUNDLE_ARCHES;
  const nodeVersion = options.nodeVersion ?? process.versions.node;
  const version = readJson<{ version: string }>(join(REPO_ROOT, 'package.json')).version;
  ensureDebianTools([{ command: 'file', debianPackage: 'file', usedBy: 'checking the bundle\'s binaries' }], log);

  const jsDir = join(PACKAGE_CACHE_DIR, 'js');
  rmSync(jsDir, { recursive: true, force: true });
  let t = Date.now();
  await bundleJs(jsDir);
  log(`bundled the agent with esbuild in ${((Date.now() - t) / 1000).toFixed(1)} s (${(dirBytes(join(jsDir, 'edge-agent.mjs')) / 1e6).toFixed(1)} MB)`);

  const results: BundleResult[] = [];
  for (const arch of arches) {
    t = Date.now();
    const name = `edge-agent-${version}-linux-${arch}`;
    const nodeDir = nodeDistribution(arch, nodeVersion, log);
    const native = sqliteNative(arch, nodeVersion, nodeDir, log);

    const stage = join(DIST_DIR, 'agent-bundle', name);
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(join(stage, 'bin'), { recursive: true });
    copyFileSync(join(nodeDir, 'bin', 'node'), join(stage, 'bin', 'node'));
    chmodSync(join(stage, 'bin', 'node'), 0o755);
    copyFileSync(join(nodeDir, 'LICENSE'), join(stage, 'bin', 'node.LICENSE'));
    writeFileSync(join(stage, 'bin', 'edge-agent'), launcher('edge-agent.mjs', 'Edge agent'), { mode: 0o755 });
    writeFileSync(join(stage, 'bin', 'edge-dlq'), launcher('edge-dlq.mjs', 'Dead letters of the agent\'s outbox (list, show, redrive)'), { mode: 0o755 });
    cpSync(jsDir, join(stage, 'lib'), { recursive: true });

    // better-sqlite3: package.json, lib/ and the native module where `bindings` looks for it; and bindings itself.
    const modules = join(stage, 'node_modules');
    const bsSource = join(REPO_ROOT, 'node_modules', 'better-sqlite3');
    for (const entry of ['package.json', 'LICENSE', 'lib']) cpSync(join(bsSource, entry), join(modules, 'better-sqlite3', entry), { recursive: true });
    mkdirSync(join(modules, 'better-sqlite3', 'build', 'Release'), { recursive: true });
    copyFileSync(native, join(modules, 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'));
    for (const dep of ['bindings', 'file-uri-to-path']) {
      cpSync(join(REPO_ROOT, 'node_modules', dep), join(modules, dep), { recursive: true, filter: (src) => !/\/(test|\.github)(\/|$)/.test(src) });
    }

    cpSync(join(REPO_ROOT, 'schemas'), join(stage, 'schemas'), { recursive: true, filter: (src) => statSync(src).isDirectory() || src.endsWith('.json') });
    copyFileSync(join(REPO_ROOT, 'deploy', 'package', 'config.example.yaml'), join(stage, 'config.example.yaml'));
    writeFileSync(join(stage, 'edge-agent.service'), bundleUnit(readFileSync(join(REPO_ROOT, 'deploy', 'systemd', 'edge-agent.service'), 'utf8')));

    const elves = [join(stage, 'bin', 'node'), join(modules, 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')];
    for (const elf of elves) checkElfArch(elf, arch);
    const glibc = glibcNeeded(elves);
    const readme = readFileSync(join(REPO_ROOT, 'deploy', 'package', 'README.txt'), 'utf8')
      .replaceAll('{{NAME}}', name)
      .replaceAll('{{VERSION}}', version)
      .replaceAll('{{ARCH}}', arch)
      .replaceAll('{{NODE_VERSION}}', nodeVersion)
      .replaceAll('{{GLIBC}}', glibc)
      .replaceAll('{{BETTER_SQLITE3}}', readJson<{ version: string }>(join(bsSource, 'package.json')).version);
    writeFileSync(join(stage, 'README.txt'), readme);

    const tarball = join(DIST_DIR, `${name}.tar.gz`);
    run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--sort=name', '-C', dirname(stage), '-czf', `${tarball}.partial`, name]);
    renameSync(`${tarball}.partial`, tarball);
    const bytes = statSync(tarball).size;
    const seconds = (Date.now() - t) / 1000;
    log(`${relative(REPO_ROOT, tarball)}: ${(bytes / 1e6).toFixed(1)} MB (${(dirBytes(stage) / 1e6).toFixed(1)} MB unpacked), Node ${nodeVersion}, glibc >= ${glibc}, ${seconds.toFixed(1)} s`);
    results.push({ arch, tarball, name, bytes, glibc, seconds });
  }
  return results;
}

function parseArgs(argv: string[]): PackageOptions {
  const options: PackageOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2) as [string, string | undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--arch') {
      const v = value();
      if (v === 'all') options.arches = BUNDLE_ARCHES;
      else if ((BUNDLE_ARCHES as readonly string[]).includes(v)) options.arches = [v as BundleArch];
      else throw new Error(`--arch must be x64, arm64 or all, not ${v}`);
    } else if (flag === '--node-version') {
      options.nodeVersion = value();
    } else {
      throw new Error(`unknown argument ${argv[i]}; usage: npm run package:agent -- [--arch x64|arm64|all] [--node-version 20.x.y]`);
    }
  }
  return options;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const started = Date.now();
  let options: PackageOptions;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`[package-agent] ${(error as Error).message}\n`);
    process.exit(2);
  }
  packageAgent(options).then(
    (results) => {
      for (const r of results) process.stdout.write(`${r.tarball}\n`);
      process.stderr.write(`[package-agent] done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    },
    (error: unknown) => {
      process.stderr.write(`[package-agent] error: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
