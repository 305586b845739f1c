/**
 * The KEDA overlay deploy/k8s/autoscaling against the base and the hub's own scaler, without a cluster: the
 * ScaledObject scales the hub worker Deployment between the same bounds and on the same lag per worker as `hub scale`'s
 * defaults, on the consumer the workers really share, through an endpoint where KEDA can reach each NATS pod, with the
 * same up/down delays; and the overlay builds on the base and hands the replica count to the HPA.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hubConfigSchema, type HubConfig } from '../../hub/src/config.js';
import { applyEnvOverrides, validateConfig } from '../../shared/config.js';
import { EVENTS_STREAM } from '../../shared/wire.js';
import { arr, obj, yamlDocuments, type Obj } from '../support/yaml-documents.js';

const file = (path: string): string => fileURLToPath(new URL(`../../deploy/k8s/${path}`, import.meta.url));
const docs = (path: string): Obj[] => yamlDocuments(file(path)).map((d) => obj(d, path));
const base = ['hub.yaml', 'nats.yaml'].flatMap((f) => docs(`base/${f}`));
const find = (kind: string, name: string): Obj => {
  const found = base.find((o) => o.kind === kind && obj(o.metadata, kind).name === name);
  assert.ok(found, `base has ${kind}/${name}`);
  return found;
};
const [scaled] = docs('autoscaling/scaledobject.yaml');
const spec = obj(scaled?.spec, 'ScaledObject.spec');

/** The hub workers' config as the Deployment gives it (ConfigMap hub-config, defaults for the rest). */
function workerConfig(): HubConfig {
  const configMap = find('ConfigMap', 'hub-config');
  const env = obj(configMap.data, 'hub-config.data') as Record<string, string>;
  const config: Record<string, unknown> = {};
  applyEnvOverrides(config, 'HUB_', hubConfigSchema, env);
  return validateConfig<HubConfig>(hubConfigSchema, config, 'hub');
}

test('k8s autoscaling: a KEDA ScaledObject on the hub worker Deployment, with the bounds of `hub scale`', () => {
  assert.equal(scaled?.apiVersion, 'keda.sh/v1alpha1');
  assert.equal(scaled?.kind, 'ScaledObject');
  assert.equal(obj(scaled?.metadata, 'metadata').namespace, 'pipeline');
  const target = obj(spec.scaleTargetRef, 'scaleTargetRef');
  assert.deepEqual([target.kind, target.name], ['Deployment', 'hub']);
  find('Deployment', 'hub');
  const { scaling } = workerConfig();
  assert.equal(spec.minReplicaCount, scaling.minWorkers);
  assert.equal(spec.maxReplicaCount, scaling.maxWorkers);
  assert.ok(Number(spec.minReplicaCount) >= 1, 'never to zero: the rules have timers that fire without events');
});

test('k8s autoscaling: the trigger reads the lag of the consumer the workers share, from a reachable NATS monitor', () => {
  const [trigger, ...others] = arr(spec.triggers).map((t) => obj(t, 'trigger'));
  assert.equal(others.length, 0);
  assert.equal(trigger?.type, 'nats-jetstream');
  const meta = obj(trigger?.metadata, 'trigger.metadata') as Record<string, string>;
  const config = workerConfig();
  assert.equal(meta.stream, EVENTS_STREAM);
  assert.equal(meta.consumer, config.consumer.durableName, 'the durable the hub workers consume with');
  assert.equal(Number(meta.lagThreshold), config.scaling.targetLagPerWorker, 'the same lag per worker as hub scale');
  assert.equal(meta.account, '$G', 'the base has no accounts');
  // KEDA reaches the consumer leader as <server name>.<endpoint>: the endpoint must be the headless service that
  // names every NATS pod, on the monitoring port, and server_name must be the pod name.
  const [host, port] = meta.natsServerMonitoringEndpoint!.split(':');
  const headless = find('Service', 'nats-headless');
  assert.equal(host, 'nats-headless.pipeline.svc.cluster.local');
  assert.ok(arr(obj(headless.spec, 'spec').ports).some((p) => Number(obj(p, 'port').port) === Number(port)), 'the headless service exposes the monitor port');
  const natsSet = find('StatefulSet', 'nats');
  assert.equal(obj(natsSet.spec, 'spec').serviceName, 'nats-headless');
  const natsConf = String(obj(find('ConfigMap', 'nats-config').data, 'data')['nats.conf'] ?? '');
  assert.match(natsConf, /server_name: \$POD_NAME/);
  assert.match(natsConf, /http: "0\.0\.0\.0:8222"/);
});

test('k8s autoscaling: the HPA behaviour carries the delays and cool-downs of hub scale', () => {
  const behavior = obj(obj(obj(spec.advanced, 'advanced').horizontalPodAutoscalerConfig, 'hpa').behavior, 'behavior');
  const up = obj(behavior.scaleUp, 'scaleUp');
  const down = obj(behavior.scaleDown, 'scaleDown');
  const { scaling } = workerConfig();
  assert.equal(Number(up.stabilizationWindowSeconds) * 1000, scaling.scaleUpAfterMs);
  assert.equal(Number(down.stabilizationWindowSeconds) * 1000, scaling.scaleDownAfterMs);
  const [upPolicy] = arr(up.policies).map((p) => obj(p, 'policy'));
  const [downPolicy] = arr(down.policies).map((p) => obj(p, 'policy'));
  assert.equal(Number(upPolicy?.periodSeconds) * 1000, scaling.coolDownMs);
  assert.equal(upPolicy?.value, scaling.maxWorkers, 'up: straight to what the lag wants, as hub scale does');
  assert.deepEqual([downPolicy?.type, downPolicy?.value], ['Pods', 1], 'down: one pod at a time');
  assert.equal(Number(downPolicy?.periodSeconds) * 1000, scaling.scaleDownCoolDownMs);
});

test('k8s autoscaling: the overlay builds on the base and leaves the replica count to the HPA', () => {
  const [kustomization] = docs('autoscaling/kustomization.yaml');
  assert.deepEqual(kustomization?.resources, ['../base', 'scaledobject.yaml']);
  const patches = arr(kustomization?.patches).map((p) => obj(p, 'patch'));
  assert.deepEqual(
    patches.map((p) => p.path),
    ['patch-hub-replicas.yaml'],
  );
  const [patch] = docs('autoscaling/patch-hub-replicas.yaml');
  assert.equal(patch?.kind, 'Deployment');
  assert.equal(obj(patch?.metadata, 'metadata').name, 'hub');
  const patchSpec = obj(patch?.spec, 'spec');
  assert.ok('replicas' in patchSpec && patchSpec.replicas === null, 'replicas: null removes the field');
  // The stopping pod's grace covers the hub's last flush (shutdownTimeoutMs), so scale-downs lose nothing.
  const hub = find('Deployment', 'hub');
  const grace = Number(obj(obj(obj(hub.spec, 'spec').template, 'template').spec, 'pod spec').terminationGracePeriodSeconds);
  assert.ok(grace * 1000 > workerConfig().shutdownTimeoutMs, `grace ${grace} s > the hub's shutdown timeout`);
});
