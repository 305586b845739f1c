/**
 * The Kubernetes overlay deploy/k8s/secure (TLS and users on top of deploy/k8s/base), without kubectl or a cluster:
 * the test builds the overlay the way kustomize does for what it uses (resources, secretGenerator, strategic-merge
 * patches of maps and of the name/mountPath-keyed lists), with the Secrets generated from a real make-security.ts
 * folder made with the command documented in the kustomization. Then it checks that every Secret, ConfigMap, volume
 * and key the pods refer to exists, lays out the files a NATS pod sees (its ConfigMap and Secret mounts) in a temp
 * folder and has the real `nats-server -t` accept that configuration, checks the hub's variables against its config
 * (including reading the mounted nkey seed), QuestDB's variables against make-security's security.conf, and that the
 * certificate names every host the hub and the routes connect to.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeSecurity, readQuestDbCredentials, type SecurityPaths } from '../../deploy/security/make-security.js';
import { checkHubConfig, hubConfigSchema, type HubConfig } from '../../hub/src/config.js';
import { ensureRuntime, RUNTIME_BIN_DIR } from '../../scripts/lib/runtime.js';
import { applyEnvOverrides, validateConfig } from '../../shared/config.js';
import { natsAuthOptions } from '../../shared/nats-auth.js';
import { arr, isObj, obj, yamlDocuments, type Obj } from '../support/yaml-documents.js';

const repoFile = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const BASE_DIR = repoFile('deploy/k8s/base');
const OVERLAY_DIR = repoFile('deploy/k8s/secure');

const objs = (v: unknown, what: string): Obj[] => arr(v).map((x) => obj(x, what));
const clone = <T>(v: T): T => structuredClone(v);

function readYaml(path: string): Obj[] {
  return yamlDocuments(path).map((value) => obj(value, path));
}

// ---------------------------------------------------------------------------------------------------------------
// A small kustomize: resources (files and folders), secretGenerator (files, envs), patches (strategic merge).

interface K8sObject extends Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
}

/** Secrets made by secretGenerator: `data` holds the plain text (kustomize would base64 it). */
interface Built {
  objects: K8sObject[];
  generatedSecrets: string[];
  generatorFiles: string[];
}

/** Merge keys of the lists this project patches (the Kubernetes API's patchMergeKey); other lists are replaced. */
const MERGE_KEYS: Record<string, string> = { containers: 'name', initContainers: 'name', volumes: 'name', env: 'name', volumeMounts: 'mountPath' };

function strategicMerge(target: unknown, patch: unknown, key = ''): unknown {
  if (isObj(patch)) {
    assert.ok(!('$patch' in patch) && !Object.keys(patch).some((k) => k.startsWith('$')), `patch directives are not supported by this test: ${JSON.stringify(patch)}`);
    const out: Obj = isObj(target) ? { ...target } : {};
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = strategicMerge(out[k], v, k);
    }
    return out;
  }
  if (Array.isArray(patch) && MERGE_KEYS[key] && Array.isArray(target)) {
    const mergeKey = MERGE_KEYS[key];
    const out = [...target];
    for (const item of patch) {
      const id = obj(item, `${key} item`)[mergeKey];
      assert.ok(id !== undefined, `${key} item without ${mergeKey}`);
      const at = out.findIndex((t) => isObj(t) && t[mergeKey] === id);
      if (at >= 0) out[at] = strategicMerge(out[at], item, key);
      else out.push(clone(item));
    }
    return out;
  }
  return clone(patch);
}

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const at = trimmed.indexOf('=');
    assert.ok(at > 0, `env file line "${trimmed}" is key=value`);
    out[trimmed.slice(0, at)] = trimmed.slice(at + 1);
  }
  return out;
}

function matchesLabels(selector: string, labels: Record<string, string> | undefined): boolean {
  return selector.split(',').every((term) => {
    const [k, v] = term.split('=');
    return labels?.[k!.trim()] === v?.trim();
  });
}

/**
 * Builds the kustomization in `dir`. `generatorRoot` replaces `dir` when reading secretGenerator files (the test's
 * temp folder holding a `secrets/` made by make-security).
 */
function build(dir: string, generatorRoot = dir): Built {
  const [k] = readYaml(join(dir, 'kustomization.yaml'));
  assert.equal(k?.kind, 'Kustomization', `${dir}: a Kustomization`);
  const known = new Set(['apiVersion', 'kind', 'resources', 'secretGenerator', 'patches']);
  for (const field of Object.keys(k!)) assert.ok(known.has(field), `${dir}: kustomization field ${field} is one this test builds`);
  const built: Built = { objects: [], generatedSecrets: [], generatorFiles: [] };
  for (const resource of arr(k!.resources).map(String)) {
    const path = join(dir, resource);
    assert.ok(existsSync(path), `${dir}: resource ${resource} exists`);
    if (statSync(path).isDirectory()) {
      // kustomize refuses a base folder that holds the overlay ("cycle detected"): hence deploy/k8s/base.
      assert.ok(!`${dir}/`.startsWith(`${join(path)}/`), `${dir}: resource ${resource} holds this kustomization`);
      const sub = build(path);
      built.objects.push(...sub.objects);
      built.generatedSecrets.push(...sub.generatedSecrets);
    } else {
      assert.ok(!resource.includes('..'), `${dir}: ${resource}: kustomize loads files only below the kustomization`);
      built.objects.push(...(readYaml(path) as K8sObject[]));
    }
  }
  for (const g of objs(k!.secretGenerator, 'secretGenerator')) {
    const data: Record<string, string> = {};
    for (const entry of arr(g.files).map(String)) {
      const [key, file] = entry.includes('=') ? [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)] : [posix.basename(entry), entry];
      built.generatorFiles.push(file);
      assert.ok(!(key in data), `secret ${String(g.name)}: key ${key} once`);
      data[key] = readFileSync(join(generatorRoot, file), 'utf8');
    }
    for (const file of arr(g.envs).map(String)) {
      built.generatorFiles.push(file);
      for (const [key, value] of Object.entries(parseEnvFile(readFileSync(join(generatorRoot, file), 'utf8')))) {
        assert.match(key, /^[-._a-zA-Z0-9]+$/, `secret ${String(g.name)}: ${key} is a valid Secret key`);
        data[key] = value;
      }
    }
    built.objects.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: String(g.name), namespace: g.namespace as string }, type: 'Opaque', data } as K8sObject);
    built.generatedSecrets.push(String(g.name));
  }
  for (const p of objs(k!.patches, 'patch')) {
    const [patch, ...more] = readYaml(join(dir, String(p.path)));
    assert.ok(patch && more.length === 0, `${String(p.path)}: one object per patch file`);
    const target = isObj(p.target) ? p.target : undefined;
    const meta = obj(patch.metadata, `${String(p.path)} metadata`);
    const hits = built.objects.filter((o) =>
      target
        ? (target.kind === undefined || o.kind === target.kind) &&
          (target.name === undefined || o.metadata.name === target.name) &&
          (target.labelSelector === undefined || matchesLabels(String(target.labelSelector), o.metadata.labels))
        : o.kind === patch.kind && o.metadata.name === meta.name && (meta.namespace === undefined || o.metadata.namespace === meta.namespace),
    );
    assert.ok(hits.length > 0, `${String(p.path)}: patches some object (kustomize fails otherwise)`);
    for (const hit of hits) {
      const { metadata: _ignored, ...body } = patch;
      const merged = strategicMerge(hit, body) as K8sObject;
      built.objects[built.objects.indexOf(hit)] = merged;
    }
  }
  return built;
}

// ---------------------------------------------------------------------------------------------------------------
// The documented command, the security folder it makes, and the overlay built from it.

const kustomizationText = readFileSync(join(OVERLAY_DIR, 'kustomization.yaml'), 'utf8');
const documentedCommand = (/npm run security -- ((?:[^\n]*\\\n#)*[^\n]*)/.exec(kustomizationText)?.[1] ?? '').replace(/\\\n#/g, ' ');
const flag = (name: string): string[] => [...documentedCommand.matchAll(new RegExp(`--${name} +('[^']*'|\\S+)`, 'g'))].map((m) => m[1]!.replace(/^'|'$/g, ''));
const HOSTS = flag('host');
const MOUNT_DIR = flag('mount-dir')[0] ?? '';
const EDGES = flag('edge');

let root = '';
let secrets: SecurityPaths;
let overlay: Built;
let base: Built;
let natsServer = '';

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'k8s-secure-'));
  const out = flag('out')[0];
  assert.equal(out, 'deploy/k8s/secure/secrets', 'the documented command writes into the overlay\'s secrets/');
  secrets = makeSecurity({ out: join(root, 'secrets'), hosts: HOSTS, edges: EDGES, schemaBucket: 'schemas', days: 2, mountDir: MOUNT_DIR });
  overlay = build(OVERLAY_DIR, root);
  base = build(BASE_DIR);
  // The binary the rest of the project uses (.runtime/bin, or PATH); ensureRuntime() fetches it when neither has it.
  const cached = join(RUNTIME_BIN_DIR, 'nats-server');
  natsServer = existsSync(cached) ? cached : (await ensureRuntime()).natsServer;
});

after(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

const named = (kind: string, name: string): K8sObject | undefined => overlay.objects.find((o) => o.kind === kind && o.metadata.name === name);
const label = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;

interface PodTemplate {
  owner: K8sObject;
  spec: Obj;
  labels: Record<string, string>;
  containers: Obj[];
}
const podTemplates = (): PodTemplate[] =>
  overlay.objects
    .filter((o) => o.kind === 'StatefulSet' || o.kind === 'Deployment')
    .map((owner) => {
      const template = obj(obj(owner.spec, label(owner)).template, `${label(owner)} template`);
      const spec = obj(template.spec, `${label(owner)} template.spec`);
      return {
        owner,
        spec,
        labels: obj(obj(template.metadata, 'template metadata').labels, 'template labels') as Record<string, string>,
        containers: objs([...arr(spec.initContainers), ...arr(spec.containers)], `${label(owner)} container`),
      };
    });
const pod = (kind: string, name: string): PodTemplate => {
  const t = podTemplates().find((p) => p.owner.kind === kind && p.owner.metadata.name === name);
  assert.ok(t, `${kind}/${name}`);
  return t;
};
const secretData = (name: string): Record<string, string> | undefined => {
  const s = named('Secret', name);
  return s ? (obj(s.data, `Secret ${name} data`) as Record<string, string>) : undefined;
};

/** The files a container sees from its ConfigMap and Secret volumes: absolute path -> content. */
function podFiles(t: PodTemplate, container: Obj): Map<string, string> {
  const files = new Map<string, string>();
  const volumes = new Map(objs(t.spec.volumes, 'volume').map((v) => [v.name as string, v]));
  for (const m of objs(container.volumeMounts, 'mount')) {
    const v = volumes.get(m.name as string);
    const source = v && (isObj(v.configMap) ? { data: named('ConfigMap', String(v.configMap.name))?.data, ref: v.configMap } : isObj(v.secret) ? { data: secretData(String(v.secret.secretName)), ref: v.secret } : undefined);
    if (!source || !isObj(source.data)) continue;
    const data = source.data as Record<string, string>;
    const items = arr(source.ref.items).length > 0 ? objs(source.ref.items, 'item').map((i) => ({ key: String(i.key), path: String(i.path) })) : Object.keys(data).map((key) => ({ key, path: key }));
    for (const { key, path } of items) {
      if (!(key in data)) continue;
      if (m.subPath !== undefined) {
        if (path === m.subPath) files.set(String(m.mountPath), data[key]!);
      } else {
        files.set(posix.join(String(m.mountPath), path), data[key]!);
      }
    }
  }
  return files;
}

/** Absolute file paths a NATS config names (includes resolved against its folder, as nats-server does). */
function natsConfigFiles(confPath: string, files: Map<string, string>): { includes: string[]; tlsFiles: string[]; missing: string[] } {
  const includes: string[] = [];
  const tlsFiles: string[] = [];
  const missing: string[] = [];
  const visit = (path: string): void => {
    const text = files.get(path);
    if (text === undefined) {
      missing.push(path);
      return;
    }
    for (const m of text.matchAll(/^\s*include\s+"?([^"\s]+)"?/gm)) {
      const included = posix.join(posix.dirname(path), m[1]!);
      includes.push(included);
      visit(included);
    }
    for (const m of text.matchAll(/^\s*(?:cert_file|key_file|ca_file)\s*:\s*"([^"]+)"/gm)) {
      tlsFiles.push(m[1]!);
      if (!files.has(m[1]!)) missing.push(m[1]!);
    }
  };
  visit(confPath);
  return { includes, tlsFiles, missing };
}

const natsPod = (): { t: PodTemplate; c: Obj; confPath: string; files: Map<string, string> } => {
  const t = pod('StatefulSet', 'nats');
  const c = t.containers.find((x) => x.name === 'nats')!;
  const command = [...arr(c.command), ...arr(c.args)].map(String);
  const confPath = command[command.indexOf('-c') + 1]!;
  return { t, c, confPath, files: podFiles(t, c) };
};

// ---------------------------------------------------------------------------------------------------------------

test('secure: the overlay builds on the base, adds only Secrets and the external Service, and its generator reads make-security\'s files', () => {
  const key = (o: K8sObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  const baseKeys = base.objects.map(key);
  const overlayKeys = overlay.objects.map(key);
  assert.equal(new Set(overlayKeys).size, overlayKeys.length, 'no object twice');
  for (const k of baseKeys) assert.ok(overlayKeys.includes(k), `the overlay keeps ${k}`);
  assert.deepEqual(overlayKeys.filter((k) => !baseKeys.includes(k)).sort(), [
    'Secret/pipeline/hub-nats', 'Secret/pipeline/nats-security', 'Secret/pipeline/questdb-security', 'Service/pipeline/nats-external',
  ]);
  for (const o of overlay.objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'pipeline', `${label(o)}: namespace`);
  // Every generator file is something make-security writes, below the git-ignored secrets/.
  for (const file of overlay.generatorFiles) {
    assert.ok(file.startsWith('secrets/'), `${file} is under secrets/`);
    assert.ok(existsSync(join(root, file)), `${file}: make-security wrote it`);
  }
  assert.ok(!overlay.generatorFiles.includes('secrets/tls/ca-key.pem'), 'the CA key never goes into the cluster');
  assert.ok(readFileSync(repoFile('.gitignore'), 'utf8').split('\n').includes('deploy/k8s/secure/secrets/'), 'secrets/ is git-ignored');
  // The documented command is complete.
  assert.ok(MOUNT_DIR.startsWith('/'), `--mount-dir ${MOUNT_DIR}`);
  assert.ok(EDGES.length > 0 && HOSTS.length > 0, 'the command names hosts and agents');
});

test('secure: kubectl\'s YAML parser can read every manifest (no unquoted "?" inside { } flow mappings)', () => {
  // go-yaml, which kubectl and kustomize parse with, refuses e.g. `{ path: /healthz?js-enabled-only=true }`.
  for (const dir of [BASE_DIR, OVERLAY_DIR, repoFile('deploy/k8s')]) {
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
      readFileSync(join(dir, file), 'utf8').split('\n').forEach((line, i) => {
        if (line.trimStart().startsWith('#')) return;
        for (const flow of line.match(/\{[^}]*\}/g) ?? []) {
          assert.ok(!flow.replace(/"[^"]*"|'[^']*'/g, '').includes('?'), `${file}:${i + 1}: quote the scalar with "?" in ${flow}`);
        }
      });
    }
  }
});

test('secure: every volume, mount, Secret/ConfigMap key and env reference of the pods resolves', () => {
  for (const t of podTemplates()) {
    const where = label(t.owner);
    const volumes = new Map(objs(t.spec.volumes, 'volume').map((v) => [v.name as string, v]));
    const claims = new Set(objs(obj(t.owner.spec, where).volumeClaimTemplates, 'claim').map((c) => String(obj(c.metadata, 'claim').name)));
    for (const [name, v] of volumes) {
      const sources = Object.keys(v).filter((k) => k !== 'name');
      assert.equal(sources.length, 1, `${where}: volume ${name} has one source (a patch merged into it?): ${sources.join(', ')}`);
      if (isObj(v.secret)) {
        const data = secretData(String(v.secret.secretName));
        if (v.secret.optional === true && !data) continue;
        assert.ok(data, `${where}: volume ${name}: Secret ${String(v.secret.secretName)} exists`);
        for (const item of objs(v.secret.items, 'item')) assert.ok(String(item.key) in data, `${where}: Secret ${String(v.secret.secretName)} has key ${String(item.key)}`);
      }
      if (isObj(v.configMap)) {
        const cm = named('ConfigMap', String(v.configMap.name));
        assert.ok(cm, `${where}: ConfigMap ${String(v.configMap.name)}`);
        for (const item of objs(v.configMap.items, 'item')) assert.ok(String(item.key) in obj(cm.data, 'data'), `${where}: ConfigMap key ${String(item.key)}`);
      }
      assert.ok(t.containers.some((c) => objs(c.volumeMounts, 'mount').some((m) => m.name === name)), `${where}: volume ${name} is mounted`);
    }
    for (const c of t.containers) {
      const mountPaths = objs(c.volumeMounts, 'mount').map((m) => {
        assert.ok(volumes.has(String(m.name)) || claims.has(String(m.name)), `${where}: mount ${String(m.name)} is a volume`);
        return String(m.mountPath);
      });
      assert.equal(new Set(mountPaths).size, mountPaths.length, `${where}: mount paths unique`);
      for (const e of objs(c.env, 'env')) {
        const from = isObj(e.valueFrom) ? e.valueFrom : undefined;
        const secretRef = from && isObj(from.secretKeyRef) ? from.secretKeyRef : undefined;
        if (secretRef) {
          const data = secretData(String(secretRef.name));
          assert.ok(data && String(secretRef.key) in data, `${where}: ${String(e.name)} from Secret ${String(secretRef.name)} key ${String(secretRef.key)}, which exists`);
        }
        const cmRef = from && isObj(from.configMapKeyRef) ? from.configMapKeyRef : undefined;
        if (cmRef) assert.ok(String(cmRef.key) in obj(named('ConfigMap', String(cmRef.name))?.data, 'data'), `${where}: ${String(e.name)}'s ConfigMap key`);
      }
      const names = objs(c.env, 'env').map((e) => e.name);
      assert.equal(new Set(names).size, names.length, `${where}: env names unique`);
    }
  }
  // Every generated Secret is used by some pod.
  for (const name of overlay.generatedSecrets) {
    const used = podTemplates().some((t) =>
      objs(t.spec.volumes, 'v').some((v) => isObj(v.secret) && v.secret.secretName === name) ||
      t.containers.some((c) => objs(c.env, 'env').some((e) => isObj(e.valueFrom) && isObj(e.valueFrom.secretKeyRef) && e.valueFrom.secretKeyRef.name === name)));
    assert.ok(used, `Secret ${name} is used`);
  }
});

test('secure: the NATS config is the base\'s plus the includes, and every file it names is mounted from the Secret', () => {
  const { c, confPath, files } = natsPod();
  const baseConf = String(obj(base.objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'nats-config')?.data, 'base nats-config')['nats.conf']);
  const conf = files.get(confPath);
  assert.ok(conf, `${confPath} is mounted`);
  // The base's lines appear in order; the overlay adds only comments, includes and no_advertise.
  const lines = conf.split('\n');
  let at = 0;
  const added: string[] = [];
  for (const line of lines) {
    if (at < baseConf.split('\n').length && line === baseConf.split('\n')[at]) at += 1;
    else added.push(line.trim());
  }
  assert.equal(at, baseConf.split('\n').length, 'every line of the base nats.conf is in the overlay\'s, in order');
  for (const line of added) assert.match(line, /^(|#.*|include "[^"]+"|no_advertise: true)$/, `added line "${line}"`);
  assert.match(conf, /^\s*http:\s*"0\.0\.0\.0:8222"/m, 'monitoring stays plain HTTP on 8222 (the probes)');
  assert.doesNotMatch(conf, /https:/);

  const { includes, tlsFiles, missing } = natsConfigFiles(confPath, files);
  assert.deepEqual(missing, [], 'every included and TLS file is in a mount');
  assert.equal(includes.length, 2, 'the client and the cluster blocks are included');
  assert.ok(tlsFiles.length >= 6, 'tls blocks name certificate, key and CA for clients and routes');
  for (const f of tlsFiles) assert.ok(f.startsWith(`${MOUNT_DIR}/`), `${f} is under --mount-dir ${MOUNT_DIR}`);
  const security = objs(c.volumeMounts, 'mount').find((m) => m.mountPath === MOUNT_DIR);
  assert.ok(security && security.readOnly === true, `the Secret is mounted read-only at --mount-dir ${MOUNT_DIR}`);
  // The probes still use the plain monitoring port.
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const get = obj(obj(c[kind], kind).httpGet, `${kind}.httpGet`);
    assert.equal(get.port, 'monitor');
    assert.equal(get.scheme ?? 'HTTP', 'HTTP');
    assert.equal(objs(c.ports, 'port').find((p) => p.name === 'monitor')?.containerPort, 8222);
  }
});

test('secure: the check above refuses conf files written without --mount-dir (they name the folder on this machine)', () => {
  const plain = mkdtempSync(join(tmpdir(), 'k8s-secure-plain-'));
  try {
    const p = makeSecurity({ out: plain, hosts: HOSTS, edges: EDGES, schemaBucket: 'schemas', days: 2 });
    const { confPath, files } = natsPod();
    files.set(posix.join(MOUNT_DIR, 'nats/client-security.conf'), readFileSync(p.natsClientConf, 'utf8'));
    files.set(posix.join(MOUNT_DIR, 'nats/cluster-security.conf'), readFileSync(p.natsClusterConf, 'utf8'));
    assert.ok(natsConfigFiles(confPath, files).missing.includes(p.serverCertFile));
  } finally {
    rmSync(plain, { recursive: true, force: true });
  }
});

test('secure: nats-server -t accepts the NATS pod\'s configuration with the mounted files (and refuses it without the certificate)', () => {
  const { c, confPath, files } = natsPod();
  const rootfs = join(root, 'nats-pod');
  // Where the pod's absolute paths are in the temp folder: every mount (and the claim's /data) under rootfs.
  const mountPaths = objs(c.volumeMounts, 'mount').map((m) => String(m.mountPath)).sort((a, b) => b.length - a.length);
  const relocate = (text: string): string => mountPaths.reduce((t, m) => t.replaceAll(`"${m}/`, `"${rootfs}${m}/`), text);
  for (const [path, content] of files) {
    mkdirSync(dirname(join(rootfs, path)), { recursive: true });
    writeFileSync(join(rootfs, path), /\.conf$/.test(path) ? relocate(content) : content);
  }
  const podName = objs(c.env, 'env').find((e) => e.name === 'POD_NAME');
  assert.equal(obj(obj(podName?.valueFrom, 'POD_NAME valueFrom').fieldRef, 'fieldRef').fieldPath, 'metadata.name');
  const run = (): { status: number | null; output: string } => {
    const r = spawnSync(natsServer, ['-t', '-c', join(rootfs, confPath)], { env: { ...process.env, POD_NAME: 'nats-0' }, encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  };
  const ok = run();
  assert.equal(ok.status, 0, ok.output);
  assert.match(ok.output, /is valid/);
  rmSync(join(rootfs, MOUNT_DIR, 'tls', 'server.pem'));
  const bad = run();
  assert.notEqual(bad.status, 0, 'nats-server -t loads the certificates, so the check above means something');
  assert.match(bad.output, /server\.pem/);
});

test('secure: the certificate names the in-cluster names the hub and the routes use', () => {
  const cert = new X509Certificate(readFileSync(secrets.serverCertFile));
  const { confPath, files } = natsPod();
  const routes = [...files.get(confPath)!.matchAll(/nats-route:\/\/([^:"\s]+):\d+/g)].map((m) => m[1]!);
  const hubServers = (JSON.parse(String(obj(named('ConfigMap', 'hub-config')?.data, 'hub-config').HUB_NATS__SERVERS)) as string[]).map((u) => new URL(u).hostname);
  const replicas = Number(obj(named('StatefulSet', 'nats')?.spec, 'nats').replicas);
  const pods = Array.from({ length: replicas }, (_, i) => `nats-${i}.nats-headless.pipeline.svc.cluster.local`);
  const service = ['nats', 'nats.pipeline', 'nats.pipeline.svc', 'nats.pipeline.svc.cluster.local'];
  for (const host of [...routes, ...hubServers, ...pods, ...service]) assert.notEqual(cert.checkHost(host), undefined, `the certificate names ${host}`);
  assert.equal(cert.checkHost('nats-0.elsewhere.svc.cluster.local'), undefined, 'the wildcard covers only the headless service');
  assert.ok(cert.verify(new X509Certificate(readFileSync(secrets.caFile)).publicKey), 'signed by the CA the pods get');
  // The gateways' name: some --host outside the cluster, and the external Service it points at.
  assert.ok(HOSTS.some((h) => !h.endsWith('.svc.cluster.local') && !service.includes(h)), 'a --host for the gateways (the LoadBalancer)');
  const external = named('Service', 'nats-external');
  const spec = obj(external?.spec, 'nats-external');
  assert.equal(spec.type, 'LoadBalancer');
  assert.deepEqual(objs(spec.ports, 'port').map((p) => [p.port, p.targetPort]), [[4222, 'client']], 'only the TLS client port is exposed');
  assert.ok(matchesLabels(Object.entries(obj(spec.selector, 'selector')).map(([k, v]) => `${k}=${String(v)}`).join(','), pod('StatefulSet', 'nats').labels));
});

test('secure: the hub pods get a valid config: the mounted seed and CA, and QuestDB\'s hub password', () => {
  const credentials = readQuestDbCredentials(secrets.dir);
  const hubs = podTemplates().filter((t) => t.owner.kind === 'Deployment' && t.labels['app.kubernetes.io/name'] === 'hub');
  assert.deepEqual(hubs.map((h) => h.owner.metadata.name).sort(), ['hub', 'hub-monitor']);
  for (const t of hubs) {
    const where = label(t.owner);
    const c = t.containers.find((x) => x.name === 'hub')!;
    const env: Record<string, string> = {};
    for (const source of objs(c.envFrom, 'envFrom')) {
      if (isObj(source.configMapRef)) Object.assign(env, obj(named('ConfigMap', String(source.configMapRef.name))?.data, 'envFrom ConfigMap'));
      if (isObj(source.secretRef)) {
        const data = secretData(String(source.secretRef.name));
        assert.ok(data || source.secretRef.optional === true, `${where}: envFrom Secret ${String(source.secretRef.name)}`);
        if (data) Object.assign(env, data);
      }
    }
    for (const e of objs(c.env, 'env')) {
      const from = isObj(e.valueFrom) ? e.valueFrom : undefined;
      if (typeof e.value === 'string') env[String(e.name)] = e.value;
      else if (from && isObj(from.secretKeyRef)) env[String(e.name)] = secretData(String(from.secretKeyRef.name))![String(from.secretKeyRef.key)]!;
      else env[String(e.name)] = 'from-the-pod';
    }
    const hubEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('HUB_')));
    const config: Record<string, unknown> = {};
    assert.doesNotThrow(() => applyEnvOverrides(config, 'HUB_', hubConfigSchema, hubEnv), `${where}: every HUB_* variable is a config field`);
    const hub = validateConfig<HubConfig>(hubConfigSchema, config, 'hub');
    assert.equal(hub.questdb.username, credentials.hub.user, `${where}: QuestDB user`);
    assert.equal(hub.questdb.password, credentials.hub.password, `${where}: QuestDB password`);
    // The seed and the CA are files the pod has; read them where they are laid out in the temp folder.
    const files = podFiles(t, c);
    const seedFile = hub.nats.nkeySeedFile!;
    const caFile = hub.nats.tls?.caFile;
    assert.equal(files.get(seedFile), readFileSync(secrets.hubSeedFile, 'utf8'), `${where}: ${seedFile} is the hub's seed`);
    assert.ok(caFile && files.get(caFile) === readFileSync(secrets.caFile, 'utf8'), `${where}: ${caFile} is the CA`);
    const rootfs = join(root, `${t.owner.metadata.name}-pod`);
    for (const [path, content] of files) {
      mkdirSync(dirname(join(rootfs, path)), { recursive: true });
      writeFileSync(join(rootfs, path), content);
    }
    hub.nats.nkeySeedFile = join(rootfs, seedFile);
    hub.nats.tls = { caFile: join(rootfs, caFile) };
    assert.doesNotThrow(() => checkHubConfig(hub), `${where}: checkHubConfig accepts it (and reads the seed)`);
    assert.ok(natsAuthOptions(hub.nats, hub.nats.servers).authenticator, `${where}: nkey authentication`);
  }
});

test('secure: QuestDB gets every line of make-security\'s security.conf as its QDB_* variable', () => {
  const lines = parseEnvFile(readFileSync(secrets.questdbConf, 'utf8'));
  assert.ok(Object.keys(lines).length >= 7);
  const t = pod('StatefulSet', 'questdb');
  const c = t.containers.find((x) => x.name === 'questdb')!;
  const env = new Map(objs(c.env, 'env').map((e) => [String(e.name), e]));
  for (const [key, value] of Object.entries(lines)) {
    const name = `QDB_${key.toUpperCase().replace(/\./g, '_')}`;
    const ref = obj(obj(env.get(name)?.valueFrom, `${name} valueFrom`).secretKeyRef, `${name} secretKeyRef`);
    assert.equal(ref.key, key, `${name} from key ${key}`);
    assert.equal(secretData(String(ref.name))?.[key], value, `${name} = the value of ${key}`);
  }
  const qdb = [...env.keys()].filter((k) => k.startsWith('QDB_'));
  assert.equal(qdb.length, Object.keys(lines).length, 'no QDB_* variable without a line');
});

test('secure: the strategic-merge applier merges by key and replaces other lists', () => {
  const merged = strategicMerge(
    { containers: [{ name: 'a', env: [{ name: 'X', value: '1' }], args: ['x'] }], volumes: [{ name: 'v', emptyDir: {} }] },
    { containers: [{ name: 'a', env: [{ name: 'Y', value: '2' }], args: ['y'] }], volumes: [{ name: 'w', secret: { secretName: 's' } }] },
  );
  assert.deepEqual(merged, {
    containers: [{ name: 'a', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }], args: ['y'] }],
    volumes: [{ name: 'v', emptyDir: {} }, { name: 'w', secret: { secretName: 's' } }],
  });
  assert.deepEqual(strategicMerge({ data: { a: '1', b: '2' } }, { data: { b: null, c: '3' } }), { data: { a: '1', c: '3' } });
});
