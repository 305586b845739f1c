/**
 * The supercluster of deploy/nats/supercluster/: the committed stream definitions agree with the region configs
 * (nats-server -t accepts every rendered node), and a real supercluster on loopback (regions eu and us, one node
 * each, joined by gateways) created from those definitions puts each region's events in its own stream and every
 * event exactly once in the global rollup. One node per region keeps it cheap; the definitions' 3 replicas become 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type StreamConfig } from '@nats-io/jetstream';
import { loadStreamDefinitions, renderRegionNodeConfig, type RegionNode, type Supercluster } from '../../deploy/nats/supercluster/render-supercluster.js';
import { startProcess, type ManagedProcess } from '../../scripts/lib/processes.js';
import { ensureRuntime } from '../../scripts/lib/runtime.js';
import { freePort, LOG_DIR } from '../support/processes.js';
import { waitFor } from '../support/questdb.js';

const root = mkdtempSync(join(tmpdir(), 'supercluster-'));
const servers: ManagedProcess[] = [];
const connections: NatsConnection[] = [];
let natsServer: string;

before(async () => {
  natsServer = (await ensureRuntime()).natsServer;
});

after(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await Promise.all(servers.map((server) => server.stop(10_000)));
  rmSync(root, { recursive: true, force: true });
});

test('stream definitions match the regions, and nats-server -t accepts every region node of 2 x 3 hosts', () => {
  const streams = loadStreamDefinitions();
  const regional = streams.filter((s) => s.sources === undefined);
  const global = streams.find((s) => s.sources !== undefined);
  assert.ok(global, 'a global rollup stream');
  const regions = regional.map((s) => s.placement?.cluster ?? '');
  assert.deepEqual(regions.sort(), ['eu', 'us']);
  for (const s of regional) {
    const region = s.placement!.cluster;
    assert.equal(s.name, `EVENTS_${region.toUpperCase()}`);
    assert.deepEqual(s.subjects, [`${region}.events.>`], `${s.name} captures what the ${region} mapping produces`);
  }
  assert.deepEqual(global.sources!.map((s) => s.name).sort(), regional.map((s) => s.name).sort(), 'the rollup sources every regional stream');
  assert.equal(global.subjects, undefined, 'the rollup takes no publishes of its own');

  const hostsOf = (region: string, base: number): RegionNode[] =>
    [1, 2, 3].map((n) => ({ name: `${region}-${n}`, host: `10.${base}.0.${10 + n}`, clientPort: 4222, clusterPort: 6222, gatewayPort: 7222, monitorPort: 8222, storeDir: join(root, 'js') }));
  const supercluster: Supercluster = { eu: hostsOf('eu', 30), us: hostsOf('us', 40) };
  for (const region of Object.keys(supercluster)) {
    for (let i = 0; i < 3; i++) {
      const file = join(root, `${region}-${i + 1}.conf`);
      const conf = renderRegionNodeConfig(supercluster, region, i);
      assert.match(conf, new RegExp(`destination: "${region}\\.events\\.>", weight: 100%, cluster: "${region}"`));
      // JetStream refuses a stream whose max_bytes does not fit the nodes' max_file_store (GB here = 1024^3).
      const maxFileStore = Number(/max_file_store: (\d+)GB/.exec(conf)?.[1]) * 1024 ** 3;
      const placedHere = streams.filter((s) => s.placement?.cluster === region).reduce((sum, s) => sum + Number(s.max_bytes), 0);
      assert.ok(placedHere <= maxFileStore, `${region}: the streams placed there (${placedHere} bytes) fit max_file_store (${maxFileStore})`);
      writeFileSync(file, conf);
      const check = spawnSync(natsServer, ['-t', '-c', file], { encoding: 'utf8' });
      assert.equal(check.status, 0, `nats-server -t accepts ${region}-${i + 1}: ${check.stdout}${check.stderr}`);
    }
  }
});

async function startRegionNode(supercluster: Supercluster, region: string): Promise<void> {
  const node = supercluster[region]![0]!;
  mkdirSync(node.storeDir, { recursive: true });
  const file = join(root, `${node.name}.conf`);
  writeFileSync(file, renderRegionNodeConfig(supercluster, region, 0));
  // Up once it serves monitoring; JetStream needs the other region too, which the test waits for itself.
  servers.push(
    await startProcess({ name: `supercluster-${node.name}`, command: [natsServer, '-c', file], env: {}, healthUrl: `http://127.0.0.1:${node.monitorPort}/varz`, logDir: LOG_DIR }),
  );
}

test('a region cluster each for eu and us: each region stream gets its own events, the global rollup every event once', async () => {
  const regions = ['eu', 'us'];
  const supercluster: Supercluster = {};
  for (const region of regions) {
    supercluster[region] = [
      {
        name: `${region}-1`,
        host: '127.0.0.1',
        clientPort: await freePort(),
        clusterPort: await freePort(),
        gatewayPort: await freePort(),
        monitorPort: await freePort(),
        storeDir: join(root, `store-${region}`),
      },
    ];
  }
  for (const region of regions) await startRegionNode(supercluster, region);
  const monitor = (region: string): string => `http://127.0.0.1:${supercluster[region]![0]!.monitorPort}`;
  // Ready: JetStream on in both, and the meta group (spanning both regions over the gateway) has a leader.
  const leaders = await waitFor(
    () =>
      Promise.all(
        regions.map((r) =>
          fetch(`${monitor(r)}/jsz`)
            .then(async (res) => ((await res.json()) as { meta_cluster?: { leader?: string } }).meta_cluster?.leader ?? '')
            .catch(() => ''),
        ),
      ),
    (l) => l.every((name) => name !== ''),
    60_000,
    250,
  );
  assert.ok(leaders.every((l) => l !== ''), `both regions see a JetStream meta leader (${leaders.join(', ')})`);

  const nc: Record<string, NatsConnection> = {};
  for (const region of regions) {
    nc[region] = await connect({ servers: `nats://127.0.0.1:${supercluster[region]![0]!.clientPort}` });
    connections.push(nc[region]);
  }
  const jsm = await jetstreamManager(nc.eu!);
  for (const definition of loadStreamDefinitions()) {
    // One node per region here; the committed definitions ask for 3 replicas.
    await jsm.streams.add({ ...(definition as unknown as Partial<StreamConfig>), name: definition.name, num_replicas: 1 });
  }
  const placed = await Promise.all(['EVENTS_EU', 'EVENTS_US', 'EVENTS_GLOBAL'].map(async (name) => (await jsm.streams.info(name)).cluster?.name));
  assert.deepEqual(placed, ['eu', 'us', 'eu'], 'each stream runs in the cluster of its placement');

  // An agent per region, publishing the subjects the edge agents publish, each batch with its Nats-Msg-Id.
  const perRegion: Record<string, number> = { eu: 400, us: 300 };
  const sent = new Set<string>();
  for (const region of regions) {
    const js = jetstream(nc[region]!);
    for (let i = 0; i < perRegion[region]!; i++) {
      const id = `${region}-gw-${i}`;
      const ack = await js.publish(`events.${region}-gw.${i % 8}`, new TextEncoder().encode(id), { msgID: id });
      assert.equal(ack.stream, `EVENTS_${region.toUpperCase()}`, `an event published in ${region} is stored by its regional stream`);
      sent.add(id);
    }
    // The same publish again (as an agent resends after a lost PubAck): the regional stream drops it.
    const again = await js.publish(`events.${region}-gw.0`, new TextEncoder().encode(`${region}-gw-0`), { msgID: `${region}-gw-0` });
    assert.equal(again.duplicate, true, `${region}: a resent batch is a duplicate`);
  }
  for (const region of regions) {
    const info = await jsm.streams.info(`EVENTS_${region.toUpperCase()}`);
    assert.equal(info.state.messages, perRegion[region], `EVENTS_${region.toUpperCase()} holds its region's events only`);
  }

  const total = perRegion.eu! + perRegion.us!;
  const sourcedAt = Date.now();
  const rollup = await waitFor(async () => (await jsm.streams.info('EVENTS_GLOBAL')).state.messages, (n) => n >= total, 30_000, 100);
  const sourcedMs = Date.now() - sourcedAt;
  assert.equal(rollup, total, 'EVENTS_GLOBAL holds as many messages as the regions together');
  // Read every rollup message: each event once, under its regional subject.
  const consumer = await jetstream(nc.eu!).consumers.get('EVENTS_GLOBAL');
  const seen = new Map<string, number>();
  const bySubjectPrefix = new Map<string, number>();
  const messages = await consumer.fetch({ max_messages: total, expires: 5_000 });
  for await (const m of messages) {
    const id = new TextDecoder().decode(m.data);
    seen.set(id, (seen.get(id) ?? 0) + 1);
    const prefix = m.subject.split('.')[0]!;
    bySubjectPrefix.set(prefix, (bySubjectPrefix.get(prefix) ?? 0) + 1);
    if (seen.size === total) break;
  }
  assert.deepEqual([...sent].filter((id) => seen.get(id) !== 1).slice(0, 10), [], 'every event exactly once in the rollup');
  assert.deepEqual(Object.fromEntries(bySubjectPrefix), { eu: perRegion.eu, us: perRegion.us });
  process.stderr.write(
    `[supercluster] eu ${perRegion.eu} + us ${perRegion.us} events; EVENTS_GLOBAL (in eu) had all ${total} within ${sourcedMs} ms of the last publish, each once\n`,
  );
});
