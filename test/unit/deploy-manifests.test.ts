/**
 * The deployment artefacts in deploy/ (systemd units, the compose trial, the Kubernetes manifests) against each other
 * and against the code, without a network, a cluster or a Docker engine: every YAML parses, Kubernetes objects have
 * the fields their kind needs and refer only to things that exist (labels, ports, volumes, ConfigMap keys), the NATS
 * routes name the StatefulSet's own pods, compose references resolve, systemd units have what a service needs, and
 * every EDGE_* / HUB_* variable they set is a real config field with a value the config schema accepts.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { agentConfigSchema } from '../../edge-agent/src/config.js';
import { hubConfigSchema } from '../../hub/src/config.js';
import { applyEnvOverrides, validateConfig } from '../../shared/config.js';
import { arr, isObj, obj, yamlDocuments, type Obj } from '../support/yaml-documents.js';

const repoFile = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const deployFile = (path: string): string => repoFile(`deploy/${path}`);
const listDir = (dir: string, suffix: string): string[] =>
  readdirSync(deployFile(dir)).filter((f) => f.endsWith(suffix)).sort();

function readYamlDocs(path: string): unknown[] {
  // merge: compose files use YAML merge keys (<<: *anchor), which Docker Compose resolves.
  return yamlDocuments(deployFile(path), { merge: true });
}

// ---------------------------------------------------------------------------------------------------------------
// Environment variables against the config schemas.

const PREFIXES = [
  { prefix: 'EDGE_', schema: agentConfigSchema, what: 'edge agent' },
  { prefix: 'HUB_', schema: hubConfigSchema, what: 'hub' },
] as const;

/** Applies one process's EDGE_* or HUB_* variables to an empty config and validates it (defaults filled in). */
function checkProcessEnv(env: Record<string, string>, where: string): number {
  let checked = 0;
  for (const { prefix, schema, what } of PREFIXES) {
    const mine = Object.fromEntries(Object.entries(env).filter(([name]) => name.startsWith(prefix)));
    if (Object.keys(mine).length === 0) continue;
    const config: Record<string, unknown> = {};
    assert.doesNotThrow(() => applyEnvOverrides(config, prefix, schema, mine), `${where}: every ${prefix}* variable names a ${what} config field`);
    assert.doesNotThrow(() => validateConfig(schema, config, what), `${where}: ${JSON.stringify(mine)} is a valid ${what} config`);
    checked += Object.keys(mine).length;
  }
  return checked;
}

test('the env check itself refuses a variable that names no config field', () => {
  assert.throws(() => checkProcessEnv({ HUB_QUESTDB__HTTP_URLL: 'x' }, 'self-test'));
  assert.throws(() => checkProcessEnv({ EDGE_OUTBOX__MAXBYTES: 'lots' }, 'self-test'));
  assert.equal(checkProcessEnv({ EDGE_NATS__NKEY_SEED_FILE: '/etc/x.nk', HUB_SINK__MAX_ROWS: '20000' }, 'self-test'), 2);
});

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes.

interface K8sObject extends Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  file: string;
}

// The base manifests; deploy/k8s/kustomization.yaml builds them, deploy/k8s/secure/ adds TLS and users
// (test/unit/deploy-k8s-secure.test.ts).
const K8S_DIR = 'k8s/base';
const k8sFiles = listDir(K8S_DIR, '.yaml').filter((f) => f !== 'kustomization.yaml');

function loadK8s(): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const file of k8sFiles) {
    for (const doc of readYamlDocs(`${K8S_DIR}/${file}`)) {
      const o = obj(doc, `${file}: document`);
      assert.equal(typeof o.apiVersion, 'string', `${file}: apiVersion`);
      assert.equal(typeof o.kind, 'string', `${file}: kind`);
      const meta = obj(o.metadata, `${file} ${String(o.kind)}: metadata`);
      assert.equal(typeof meta.name, 'string', `${file} ${String(o.kind)}: metadata.name`);
      assert.match(meta.name as string, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${file}: ${String(meta.name)} is a DNS label`);
      objects.push({ ...o, file } as K8sObject);
    }
  }
  return objects;
}

const k8s = loadK8s();
const NAMESPACE = 'pipeline';
const named = (kind: string, name: string): K8sObject | undefined => k8s.find((o) => o.kind === kind && o.metadata.name === name);
const ofKind = (kind: string): K8sObject[] => k8s.filter((o) => o.kind === kind);
const label = (o: K8sObject): string => `${o.file} ${o.kind}/${o.metadata.name}`;

/** Pod templates of the workloads, with their labels and containers. */
interface PodTemplate {
  owner: K8sObject;
  labels: Record<string, string>;
  spec: Obj;
  containers: Obj[];
}
const WORKLOAD_KINDS = ['StatefulSet', 'Deployment'];
const podTemplates: PodTemplate[] = k8s
  .filter((o) => WORKLOAD_KINDS.includes(o.kind))
  .map((owner) => {
    const template = obj(obj(owner.spec, `${label(owner)} spec`).template, `${label(owner)} spec.template`);
    const labels = obj(obj(template.metadata, `${label(owner)} template.metadata`).labels, `${label(owner)} template labels`) as Record<string, string>;
    const spec = obj(template.spec, `${label(owner)} template.spec`);
    return { owner, labels, spec, containers: [...arr(spec.initContainers), ...arr(spec.containers)].map((c) => obj(c, `${label(owner)} container`)) };
  });
const selects = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

test('k8s: every object has apiVersion, kind, a name and the pipeline namespace', () => {
  assert.ok(k8s.length >= 10, `found ${k8s.length} objects`);
  const namespace = named('Namespace', NAMESPACE);
  assert.ok(namespace, 'a Namespace "pipeline"');
  for (const o of k8s) {
    if (o.kind === 'Namespace') continue;
    assert.equal(o.metadata.namespace, NAMESPACE, `${label(o)}: metadata.namespace`);
  }
  const keys = k8s.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
  assert.equal(new Set(keys).size, keys.length, 'no object is declared twice');
  const known: Record<string, string> = {
    Namespace: 'v1', ConfigMap: 'v1', Service: 'v1', Secret: 'v1', StatefulSet: 'apps/v1', Deployment: 'apps/v1',
    PodDisruptionBudget: 'policy/v1',
  };
  for (const o of k8s) assert.equal(o.apiVersion, known[o.kind], `${label(o)}: apiVersion of a ${o.kind}`);
});

test('k8s: kustomization lists every manifest, and deploy/k8s builds the base', () => {
  const [kustomization] = readYamlDocs(`${K8S_DIR}/kustomization.yaml`) as Obj[];
  assert.equal(kustomization?.kind, 'Kustomization');
  assert.deepEqual([...arr(kustomization?.resources)].sort(), k8sFiles);
  const [top] = readYamlDocs('k8s/kustomization.yaml') as Obj[];
  assert.equal(top?.kind, 'Kustomization');
  assert.deepEqual(top?.resources, ['base'], 'kubectl apply -k deploy/k8s applies the base');
});

test('k8s: workloads have replicas, selectors matching their template labels, and StatefulSets a headless service', () => {
  for (const { owner, labels } of podTemplates) {
    const spec = obj(owner.spec, label(owner));
    assert.ok(Number.isInteger(spec.replicas) && (spec.replicas as number) >= 1, `${label(owner)}: replicas`);
    const matchLabels = obj(obj(spec.selector, `${label(owner)} selector`).matchLabels, `${label(owner)} selector.matchLabels`) as Record<string, string>;
    assert.ok(selects(matchLabels, labels), `${label(owner)}: selector.matchLabels ${JSON.stringify(matchLabels)} selects its template labels`);
    // Two workloads must not select each other's pods.
    for (const other of podTemplates) {
      if (other.owner !== owner) assert.ok(!selects(matchLabels, other.labels), `${label(owner)} does not select ${label(other.owner)}'s pods`);
    }
    if (owner.kind === 'StatefulSet') {
      assert.equal(typeof spec.serviceName, 'string', `${label(owner)}: serviceName`);
      const service = named('Service', spec.serviceName as string);
      assert.ok(service, `${label(owner)}: its serviceName ${String(spec.serviceName)} is a Service here`);
      const serviceSpec = obj(service.spec, label(service));
      assert.equal(serviceSpec.clusterIP, 'None', `${label(service)} is headless`);
      assert.ok(selects(serviceSpec.selector as Record<string, string>, labels), `${label(service)} selects ${label(owner)}'s pods`);
    }
  }
});

const containerPorts = (c: Obj): Obj[] => arr(c.ports).map((p) => obj(p, 'port'));
const hasPort = (c: Obj, port: unknown): boolean =>
  containerPorts(c).some((p) => (typeof port === 'number' ? p.containerPort === port : p.name === port));

test('k8s: containers have an image, resources, and probes on ports they declare', () => {
  for (const { owner, containers } of podTemplates) {
    for (const c of containers) {
      const where = `${label(owner)} container ${String(c.name)}`;
      assert.equal(typeof c.image, 'string', `${where}: image`);
      assert.match(c.image as string, /:[\w.-]+$/, `${where}: image has a pinned tag`);
      const resources = obj(c.resources, `${where}: resources`);
      assert.ok(isObj(resources.requests) && isObj(resources.limits), `${where}: requests and limits`);
      const names = containerPorts(c).map((p) => p.name);
      assert.equal(new Set(names).size, names.length, `${where}: port names unique`);
      for (const p of containerPorts(c)) assert.ok(Number.isInteger(p.containerPort), `${where}: containerPort`);
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        if (c[kind] === undefined) continue;
        const probe = obj(c[kind], `${where} ${kind}`);
        const action = (probe.httpGet ?? probe.tcpSocket) as Obj | undefined;
        if (probe.exec !== undefined) continue;
        assert.ok(action, `${where} ${kind}: httpGet, tcpSocket or exec`);
        assert.ok(hasPort(c, action.port), `${where} ${kind}: port ${String(action.port)} is a declared container port`);
      }
      assert.ok(c.readinessProbe && c.livenessProbe, `${where}: readiness and liveness probes`);
    }
  }
});

test('k8s: volume mounts, ConfigMap volumes and envFrom refer to what exists', () => {
  for (const { owner, spec, containers } of podTemplates) {
    const volumes = new Map(arr(spec.volumes).map((v) => [obj(v, 'volume').name as string, v as Obj]));
    const claims = new Set(arr(obj(owner.spec, label(owner)).volumeClaimTemplates).map((t) => obj(obj(t, 'claim').metadata, 'claim metadata').name as string));
    for (const name of claims) assert.ok(!volumes.has(name), `${label(owner)}: ${name} is a volume and a claim template`);
    for (const [name, volume] of volumes) {
      const used = containers.some((c) => arr(c.volumeMounts).some((m) => (m as Obj).name === name));
      assert.ok(used, `${label(owner)}: volume ${name} is mounted`);
      if (!isObj(volume.configMap)) continue;
      const configMap = named('ConfigMap', volume.configMap.name as string);
      assert.ok(configMap, `${label(owner)}: volume ${name} refers to ConfigMap ${String(volume.configMap.name)}, declared here`);
      const data = obj(configMap.data, `${label(configMap)} data`);
      for (const item of arr(volume.configMap.items)) {
        assert.ok((item as Obj).key as string in data, `${label(owner)}: ConfigMap ${configMap.metadata.name} has key ${String((item as Obj).key)}`);
      }
    }
    for (const c of containers) {
      const where = `${label(owner)} container ${String(c.name)}`;
      const mountPaths = new Set<string>();
      for (const m of arr(c.volumeMounts).map((v) => obj(v, 'mount'))) {
        const name = m.name as string;
        assert.ok(volumes.has(name) || claims.has(name), `${where}: mount ${name} is a declared volume or claim template`);
        assert.ok(!mountPaths.has(m.mountPath as string), `${where}: mountPath ${String(m.mountPath)} used once`);
        mountPaths.add(m.mountPath as string);
        const volume = volumes.get(name);
        if (m.subPath !== undefined && isObj(volume?.configMap)) {
          const paths = arr(volume.configMap.items).map((i) => (i as Obj).path);
          assert.ok(paths.includes(m.subPath), `${where}: subPath ${String(m.subPath)} is an item of ${name}`);
        }
      }
      for (const source of arr(c.envFrom).map((e) => obj(e, 'envFrom'))) {
        const ref = (source.configMapRef ?? source.secretRef) as Obj | undefined;
        assert.ok(ref, `${where}: envFrom configMapRef or secretRef`);
        if (source.configMapRef && ref.optional !== true) {
          assert.ok(named('ConfigMap', ref.name as string), `${where}: envFrom ConfigMap ${String(ref.name)} is declared here`);
        }
      }
      for (const e of arr(c.env).map((v) => obj(v, 'env'))) {
        const keyRef = isObj(e.valueFrom) ? (e.valueFrom.configMapKeyRef as Obj | undefined) : undefined;
        if (!keyRef) continue;
        const configMap = named('ConfigMap', keyRef.name as string);
        assert.ok(configMap && (keyRef.key as string) in obj(configMap.data, 'data'), `${where}: ${String(e.name)} refers to an existing ConfigMap key`);
      }
    }
  }
});

test('k8s: every Service selects pods of some workload, and its target ports exist there', () => {
  for (const service of ofKind('Service')) {
    const spec = obj(service.spec, label(service));
    const selector = obj(spec.selector, `${label(service)} selector`) as Record<string, string>;
    const pods = podTemplates.filter((t) => selects(selector, t.labels));
    assert.ok(pods.length > 0, `${label(service)}: selector ${JSON.stringify(selector)} matches a pod template`);
    for (const port of arr(spec.ports).map((p) => obj(p, 'service port'))) {
      assert.ok(Number.isInteger(port.port), `${label(service)}: port`);
      const target = port.targetPort ?? port.port;
      for (const pod of pods) {
        assert.ok(pod.containers.some((c) => hasPort(c, target)), `${label(service)}: targetPort ${String(target)} is a port of ${label(pod.owner)}`);
      }
    }
  }
});

test('k8s: NATS is a 3-node StatefulSet whose routes name its own pods, its store on the claim, guarded by a PDB', () => {
  const sts = named('StatefulSet', 'nats');
  assert.ok(sts, 'StatefulSet nats');
  const spec = obj(sts.spec, label(sts));
  assert.equal(spec.replicas, 3);
  const headless = spec.serviceName as string;
  assert.equal(obj(named('Service', headless)?.spec, 'headless').publishNotReadyAddresses, true, 'pods resolve before they are ready');
  const template = podTemplates.find((t) => t.owner === sts)!;
  const container = template.containers.find((c) => c.name === 'nats')!;
  const configVolume = arr(template.spec.volumes).map((v) => v as Obj).find((v) => isObj(v.configMap))!;
  const configMap = named('ConfigMap', (configVolume.configMap as Obj).name as string)!;
  const conf = obj(configMap.data, 'nats config')['nats.conf'];
  assert.equal(typeof conf, 'string', 'nats.conf in the ConfigMap');
  const text = conf as string;
  const expected = [0, 1, 2].map((i) => `${sts.metadata.name}-${i}.${headless}.${NAMESPACE}.svc.cluster.local`);
  const routes = [...text.matchAll(/nats-route:\/\/([^:"\s]+):(\d+)/g)];
  assert.deepEqual(routes.map((m) => m[1]).sort(), expected, 'routes name nats-0..2 by their stable DNS names');
  const clusterPort = containerPorts(container).find((p) => p.name === 'cluster')?.containerPort;
  for (const m of routes) assert.equal(Number(m[2]), clusterPort, 'routes use the cluster port');
  assert.match(text, /cluster\s*\{[^}]*name:\s*"hub"/, 'cluster name hub');
  assert.match(text, /sync_interval:\s*always/);
  assert.match(text, /server_name:\s*\$POD_NAME/);
  assert.ok(arr(container.env).some((e) => (e as Obj).name === 'POD_NAME'), 'POD_NAME is set in the container');
  // The config file the command names is where the ConfigMap is mounted.
  const command = [...arr(container.command), ...arr(container.args)].map(String);
  const confPath = command[command.indexOf('-c') + 1] ?? command[command.indexOf('--config') + 1];
  const configMount = arr(container.volumeMounts).map((m) => m as Obj).find((m) => m.name === configVolume.name)!;
  assert.equal(confPath, `${String(configMount.mountPath)}/nats.conf`);
  // JetStream's store is on the claim template's volume.
  const storeDir = /store_dir:\s*"([^"]+)"/.exec(text)?.[1];
  const claim = obj(arr(spec.volumeClaimTemplates)[0], 'claim');
  const dataMount = arr(container.volumeMounts).map((m) => m as Obj).find((m) => m.name === obj(claim.metadata, 'claim').name)!;
  assert.ok(storeDir?.startsWith(`${String(dataMount.mountPath)}/`), `store_dir ${storeDir} is on the PVC (${String(dataMount.mountPath)})`);
  // The PDB keeps a quorum.
  const pdbs = ofKind('PodDisruptionBudget').filter((p) => selects(obj(obj(p.spec, 'pdb').selector, 'pdb selector').matchLabels as Record<string, string>, template.labels));
  assert.equal(pdbs.length, 1, 'one PDB selects the NATS pods');
  assert.equal(obj(pdbs[0]!.spec, 'pdb').minAvailable, 2);
  for (const p of ofKind('PodDisruptionBudget')) {
    const matchLabels = obj(obj(p.spec, 'pdb').selector, 'pdb selector').matchLabels as Record<string, string>;
    assert.ok(podTemplates.some((t) => selects(matchLabels, t.labels)), `${label(p)} selects some pods`);
  }
});

test('k8s: QuestDB is one replica on a volume; hubs probe /healthz on 8090 and reach NATS and QuestDB by their services', () => {
  const questdb = named('StatefulSet', 'questdb');
  assert.ok(questdb);
  assert.equal(obj(questdb.spec, 'questdb').replicas, 1, 'open-source QuestDB does not cluster');
  assert.equal(arr(obj(questdb.spec, 'questdb').volumeClaimTemplates).length, 1);
  const hubs = podTemplates.filter((t) => t.owner.kind === 'Deployment' && t.labels['app.kubernetes.io/name'] === 'hub');
  assert.ok(hubs.length >= 1);
  const hubConfig = obj(named('ConfigMap', 'hub-config')?.data, 'hub-config data') as Record<string, string>;
  const servers = JSON.parse(hubConfig.HUB_NATS__SERVERS!) as string[];
  const nats = named('StatefulSet', 'nats')!;
  for (const url of servers) {
    const host = new URL(url).hostname;
    assert.match(host, new RegExp(`^nats-[0-2]\\.${String(obj(nats.spec, 'nats').serviceName)}\\.${NAMESPACE}\\.svc\\.cluster\\.local$`), `${url} is a NATS pod`);
  }
  assert.equal(new URL(hubConfig.HUB_QUESTDB__HTTPURL!).hostname.split('.')[0], 'questdb');
  assert.ok(named('Service', 'questdb'));
  assert.equal(hubConfig.HUB_HTTP__HOST, '0.0.0.0', 'probes reach the status server from outside the pod');
  for (const hub of hubs) {
    const c = hub.containers[0]!;
    for (const kind of ['readinessProbe', 'livenessProbe']) {
      const get = obj(obj(c[kind], kind).httpGet, `${kind}.httpGet`);
      assert.equal(get.path, '/healthz');
      assert.equal(containerPorts(c).find((p) => p.name === get.port || p.containerPort === get.port)?.containerPort, 8090);
    }
    const grace = hub.spec.terminationGracePeriodSeconds as number;
    assert.ok(grace * 1000 > (hubConfigSchema.properties.shutdownTimeoutMs.default as number), `${label(hub.owner)}: grace period above the hub's shutdownTimeoutMs`);
  }
  const alerting = hubs.filter((h) => !arr(h.containers[0]!.env).some((e) => (e as Obj).name === 'HUB_ALERTING__PIPELINE__ENABLED' && (e as Obj).value === 'false'));
  assert.equal(alerting.map((h) => obj(h.owner.spec, 'spec').replicas).reduce((a, b) => (a as number) + (b as number), 0), 1, 'pipeline alerts on exactly one hub process');
});

test('k8s: every EDGE_*/HUB_* variable is a config field with a valid value', () => {
  let checked = 0;
  for (const { owner, containers } of podTemplates) {
    for (const c of containers) {
      const env: Record<string, string> = {};
      for (const source of arr(c.envFrom).map((e) => e as Obj)) {
        const ref = source.configMapRef as Obj | undefined;
        const configMap = ref ? named('ConfigMap', ref.name as string) : undefined;
        if (configMap) Object.assign(env, configMap.data);
      }
      for (const e of arr(c.env).map((v) => v as Obj)) env[e.name as string] = typeof e.value === 'string' ? e.value : 'from-the-pod';
      checked += checkProcessEnv(env, `${label(owner)} container ${String(c.name)}`);
    }
  }
  assert.ok(checked > 5, `checked ${checked} variables`);
});

// ---------------------------------------------------------------------------------------------------------------
// Compose.

const compose = obj(readYamlDocs('compose/compose.yaml')[0], 'compose.yaml');
const services = obj(compose.services, 'services') as Record<string, Obj>;

test('compose: depends_on targets exist and the ones awaited healthy have a healthcheck', () => {
  assert.deepEqual(Object.keys(services).sort(), ['edge-agent', 'hub', 'nats-1', 'nats-2', 'nats-3', 'questdb']);
  for (const [name, service] of Object.entries(services)) {
    assert.ok(service.image || service.build, `${name}: image or build`);
    assert.ok(isObj(service.healthcheck), `${name}: healthcheck`);
    const deps = Array.isArray(service.depends_on) ? Object.fromEntries(service.depends_on.map((d) => [d, {}])) : obj(service.depends_on ?? {}, 'depends_on');
    for (const [target, condition] of Object.entries(deps)) {
      assert.ok(target in services, `${name}: depends_on ${target} is a service`);
      assert.notEqual(target, name);
      const c = (condition as Obj).condition;
      if (c === 'service_healthy') assert.ok(isObj(services[target]!.healthcheck), `${name} waits for ${target} healthy: it has a healthcheck`);
      if (c !== undefined) assert.ok(['service_started', 'service_healthy', 'service_completed_successfully'].includes(c as string));
    }
  }
  // The image the agent uses is the one the hub builds.
  assert.equal(services['edge-agent']!.image, services.hub!.image);
  assert.ok(obj(services['edge-agent']!.depends_on, 'agent depends_on').hub, 'the agent starts after the image is built');
});

test('compose: named volumes are declared, bind-mounted files and the Dockerfile exist, host ports are unique', () => {
  const declared = new Set(Object.keys(obj(compose.volumes ?? {}, 'volumes')));
  const used = new Set<string>();
  const hostPorts: string[] = [];
  for (const [name, service] of Object.entries(services)) {
    for (const volume of arr(service.volumes)) {
      const source = typeof volume === 'string' ? volume.split(':')[0]! : String((volume as Obj).source);
      if (source.startsWith('.') || source.startsWith('/')) {
        assert.ok(existsSync(deployFile(`compose/${source}`)), `${name}: bind mount ${source} exists`);
      } else {
        assert.ok(declared.has(source), `${name}: volume ${source} is declared under volumes:`);
        used.add(source);
      }
    }
    for (const port of arr(service.ports)) {
      const spec = String(port);
      const parts = spec.split(':');
      assert.ok(parts.length >= 2, `${name}: port ${spec} publishes host:container`);
      hostPorts.push(parts.slice(0, -1).join(':'));
    }
  }
  assert.deepEqual([...declared].filter((v) => !used.has(v)), [], 'every declared volume is used');
  assert.equal(new Set(hostPorts).size, hostPorts.length, `host ports unique: ${hostPorts.join(', ')}`);
  const build = obj(services.hub!.build, 'hub build');
  const context = fileURLToPath(new URL(`../../deploy/compose/${String(build.context)}/`, import.meta.url));
  assert.equal(context, repoFile(''), 'the build context is the repository');
  const dockerfile = readFileSync(repoFile(String(build.dockerfile)), 'utf8');
  for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const path of m[1]!.split(/\s+/)) assert.ok(existsSync(repoFile(path)), `Dockerfile copies ${path}, which exists`);
  }
  assert.match(dockerfile, /^FROM node:20/m);
});

test('compose: the three NATS nodes route to each other under their service names', () => {
  const text = readFileSync(deployFile('compose/nats.conf'), 'utf8');
  const routes = [...text.matchAll(/nats-route:\/\/([^:"\s]+):6222/g)].map((m) => m[1]).sort();
  const natsServices = Object.keys(services).filter((s) => s.startsWith('nats-')).sort();
  assert.deepEqual(routes, natsServices);
  for (const name of natsServices) assert.equal(obj(services[name]!.environment, 'env').SERVER_NAME, name, `${name}: SERVER_NAME`);
  assert.match(text, /sync_interval:\s*always/);
});

test('compose: every EDGE_*/HUB_* variable is a config field with a valid value', () => {
  let checked = 0;
  for (const [name, service] of Object.entries(services)) {
    const env = Array.isArray(service.environment)
      ? Object.fromEntries(service.environment.map((e: string) => [e.split('=')[0], e.split('=').slice(1).join('=')]))
      : Object.fromEntries(Object.entries(obj(service.environment ?? {}, 'environment')).map(([k, v]) => [k, String(v)]));
    checked += checkProcessEnv(env, `compose service ${name}`);
  }
  assert.ok(checked >= 6);
});

// ---------------------------------------------------------------------------------------------------------------
// systemd.

type Unit = Map<string, Map<string, string[]>>;

/** A tiny systemd unit parser: sections, `Key=value` (repeatable), comments, backslash continuations. */
function parseUnit(text: string, file: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      assert.ok(!unit.has(header[1]!), `${file}:${i + 1}: section [${header[1]}] once`);
      section = new Map();
      unit.set(header[1]!, section);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    assert.ok(kv, `${file}:${i + 1}: "${line}" is Key=value`);
    assert.ok(section, `${file}:${i + 1}: key outside a section`);
    const values = section.get(kv[1]!) ?? [];
    values.push(kv[2]!.trim());
    section.set(kv[1]!, values);
  });
  return unit;
}

const SYSTEMD_DIR = 'systemd';
const unitFiles = readdirSync(deployFile(SYSTEMD_DIR)).filter((f) => /\.(service|timer)$/.test(f)).sort();
const units = new Map(unitFiles.map((f) => [f, parseUnit(readFileSync(deployFile(`${SYSTEMD_DIR}/${f}`), 'utf8'), f)]));
const get = (unit: Unit, section: string, key: string): string | undefined => unit.get(section)?.get(key)?.at(-1);
const all = (unit: Unit, section: string, key: string): string[] => unit.get(section)?.get(key) ?? [];
const seconds = (value: string | undefined): number => {
  const m = /^(\d+)(s|min|m|h)?$/.exec(value ?? '');
  assert.ok(m, `a time span: ${value}`);
  return Number(m[1]) * ({ s: 1, min: 60, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1);
};
const timerTargets = new Set([...units].filter(([f]) => f.endsWith('.timer')).map(([f, u]) => get(u, 'Timer', 'Unit') ?? f.replace(/\.timer$/, '.service')));

test('systemd: parser reads sections, repeated keys and continuations', () => {
  const unit = parseUnit('# c\n[Service]\nEnvironment=A=1\nEnvironment=B=2\nExecStart=/bin/x \\\n  --y\n', 'inline');
  assert.deepEqual(all(unit, 'Service', 'Environment'), ['A=1', 'B=2']);
  assert.equal(get(unit, 'Service', 'ExecStart'), '/bin/x    --y');
  assert.throws(() => parseUnit('Key=value\n', 'inline'));
  assert.throws(() => parseUnit('[Service]\nnot a pair\n', 'inline'));
});

test('systemd: every service has [Unit] and [Service], restarts, absolute paths; installable unless a timer starts it', () => {
  assert.deepEqual(unitFiles, ['edge-agent.service', 'hub-scale.service', 'hub@.service', 'lake-export.service', 'lake-export.timer', 'nats-server.service', 'questdb.service']);
  for (const [file, unit] of units) {
    assert.ok(get(unit, 'Unit', 'Description'), `${file}: [Unit] Description`);
    if (!file.endsWith('.service')) continue;
    assert.ok(unit.has('Service'), `${file}: [Service]`);
    const type = get(unit, 'Service', 'Type');
    if (timerTargets.has(file)) {
      assert.equal(type, 'oneshot', `${file}: a timer's job runs once`);
    } else {
      assert.ok(unit.has('Install'), `${file}: [Install]`);
      assert.equal(get(unit, 'Install', 'WantedBy'), 'multi-user.target');
      assert.equal(get(unit, 'Service', 'Restart'), 'always', `${file}: Restart=always`);
      assert.ok(seconds(get(unit, 'Service', 'RestartSec')) > 0, `${file}: RestartSec`);
    }
    const execs = ['ExecStart', 'ExecReload', 'ExecStop'].flatMap((k) => all(unit, 'Service', k));
    assert.ok(all(unit, 'Service', 'ExecStart').length === 1, `${file}: one ExecStart`);
    for (const exec of execs) {
      const binary = exec.replace(/^[-@:+!]+/, '').split(/\s+/)[0]!;
      assert.ok(binary.startsWith('/'), `${file}: ${binary} is an absolute path`);
      // Scripts of this repository (installed at /opt/pipeline) must exist in it.
      for (const arg of exec.split(/\s+/).filter((a) => a.startsWith('/opt/pipeline/'))) {
        assert.ok(existsSync(repoFile(arg.slice('/opt/pipeline/'.length))), `${file}: ${arg} is a file of the repository`);
      }
    }
    for (const envFile of all(unit, 'Service', 'EnvironmentFile')) assert.ok(envFile.replace(/^-/, '').startsWith('/'), `${file}: EnvironmentFile ${envFile} absolute`);
    for (const key of ['WorkingDirectory', 'ReadWritePaths']) {
      for (const v of all(unit, 'Service', key)) for (const path of v.split(/\s+/)) assert.ok(path.replace(/^-/, '').startsWith('/'), `${file}: ${key} ${path} absolute`);
    }
    assert.equal(get(unit, 'Service', 'NoNewPrivileges'), 'yes', `${file}: NoNewPrivileges`);
    assert.equal(get(unit, 'Service', 'ProtectSystem'), 'strict', `${file}: ProtectSystem=strict`);
    // With ProtectSystem=strict, a state directory is writable only through StateDirectory / ReadWritePaths.
    const state = get(unit, 'Service', 'StateDirectory');
    const writable = all(unit, 'Service', 'ReadWritePaths').flatMap((v) => v.split(/\s+/));
    if (state && writable.length > 0) assert.ok(writable.includes(`/var/lib/${state}`), `${file}: ReadWritePaths has /var/lib/${state}`);
  }
});

test('systemd: the agent stops cleanly within TimeoutStopSec, keeps its outbox in its StateDirectory, fits a gateway', () => {
  const unit = units.get('edge-agent.service')!;
  const shutdownMs = agentConfigSchema.properties.shutdownTimeoutMs.default;
  const exampleMs = /^shutdownTimeoutMs:\s*(\d+)/m.exec(readFileSync(repoFile('edge-agent/config.example.yaml'), 'utf8'))?.[1];
  assert.equal(Number(exampleMs), shutdownMs, 'config.example.yaml states the default');
  assert.ok(seconds(get(unit, 'Service', 'TimeoutStopSec')) * 1000 > shutdownMs, 'TimeoutStopSec above shutdownTimeoutMs');
  assert.equal(get(unit, 'Service', 'KillSignal'), 'SIGTERM');
  assert.equal(get(unit, 'Service', 'Type'), 'simple');
  const env = Object.fromEntries(all(unit, 'Service', 'Environment').map((e) => [e.split('=')[0], e.split('=').slice(1).join('=')]));
  assert.equal(env.EDGE_DATADIR, `/var/lib/${get(unit, 'Service', 'StateDirectory')}`, 'EDGE_DATADIR is the StateDirectory');
  assert.ok(all(unit, 'Service', 'ReadWritePaths').includes(env.EDGE_DATADIR!));
  assert.equal(get(unit, 'Service', 'PrivateTmp'), 'yes');
  assert.ok(get(unit, 'Service', 'DynamicUser') === 'yes' || get(unit, 'Service', 'User'), 'a dedicated or dynamic user');
  assert.match(get(unit, 'Service', 'MemoryMax') ?? '', /^\d+[MG]$/);
  assert.match(get(unit, 'Service', 'CPUQuota') ?? '', /^\d+%$/);
  assert.match(get(unit, 'Service', 'ExecStart') ?? '', /bin\/edge-agent\.js --config \/etc\/edge-agent\/agent\.yaml$/);
});

test('systemd: hub workers are a template named by their instance; nats-server, QuestDB and the timer', () => {
  const hub = units.get('hub@.service')!;
  assert.ok(all(hub, 'Service', 'Environment').includes('HUB_NATS__NAME=%i'));
  assert.ok(seconds(get(hub, 'Service', 'TimeoutStopSec')) * 1000 > hubConfigSchema.properties.shutdownTimeoutMs.default);
  // hub scale stops its workers itself (each within scaling.stopTimeoutMs); systemd must wait for that.
  const scale = units.get('hub-scale.service')!;
  assert.match(get(scale, 'Service', 'ExecStart') ?? '', /bin\/hub\.js scale --config /);
  assert.equal(get(scale, 'Service', 'KillMode'), 'mixed', 'SIGTERM to the supervisor only; it stops the workers');
  assert.ok(seconds(get(scale, 'Service', 'TimeoutStopSec')) * 1000 > hubConfigSchema.properties.scaling.properties.stopTimeoutMs.default);
  const nats = units.get('nats-server.service')!;
  assert.match(get(nats, 'Service', 'ExecStart') ?? '', / (-c|--config) \/etc\/nats\/nats\.conf$/);
  assert.ok(Number(get(nats, 'Service', 'LimitNOFILE')) >= 65536);
  // Lame duck lasts 30 s (deploy/nats/node.conf.tmpl); the stop timeout must let it finish.
  const lameDuck = /lame_duck_duration:\s*"(\d+)s"/.exec(readFileSync(deployFile('nats/node.conf.tmpl'), 'utf8'))?.[1];
  assert.ok(seconds(get(nats, 'Service', 'TimeoutStopSec')) > Number(lameDuck));
  const questdb = units.get('questdb.service')!;
  const qdb = get(questdb, 'Service', 'ExecStart') ?? '';
  assert.match(qdb, /^\/\S+\/java .*-p \S+\/questdb-[\d.]+\.jar -m io\.questdb\/io\.questdb\.ServerMain -d \/var\/lib\/questdb$/);
  assert.equal(`/var/lib/${get(questdb, 'Service', 'StateDirectory')}`, '/var/lib/questdb');
  const timer = units.get('lake-export.timer')!;
  const target = get(timer, 'Timer', 'Unit');
  assert.ok(target && units.has(target), `the timer names its service (${target})`);
  assert.ok(get(timer, 'Timer', 'OnCalendar'), 'OnCalendar');
  assert.equal(get(timer, 'Timer', 'Persistent'), 'true', 'a missed run is caught up');
  assert.equal(get(timer, 'Install', 'WantedBy'), 'timers.target');
  const exportExec = get(units.get(target)!, 'Service', 'ExecStart') ?? '';
  assert.match(exportExec, /--import tsx \/opt\/pipeline\/hub\/src\/export\/export-cli\.ts --to \S+/);
  const scripts = (JSON.parse(readFileSync(repoFile('package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.ok(scripts.export?.endsWith('hub/src/export/export-cli.ts'), 'the same entry point as npm run export');
});

test('systemd: every EDGE_*/HUB_* variable is a config field with a valid value', () => {
  let checked = 0;
  for (const [file, unit] of units) {
    const env = Object.fromEntries(all(unit, 'Service', 'Environment').map((e) => [e.split('=')[0]!, e.split('=').slice(1).join('=')]));
    checked += checkProcessEnv(env, file);
  }
  assert.ok(checked >= 2);
});
