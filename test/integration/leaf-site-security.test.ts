/**
 * Per-site users of the leaf node topology (deploy/security/make-security.ts --site, deploy/nats/leaf.conf.tmpl): a
 * hub cluster with TLS and nkeys and its leaf node listener, a leaf for site "berlin" logged in with its site seed
 * over TLS, its gateway logged in on the leaf with its own seed. The gateway's JetStream publishes go through the
 * leaf (which has no JetStream) to the hub's stream and are acknowledged; it cannot publish another agent's
 * subjects (the leaf refuses). A leaf holding site "paris"'s seed but letting anyone in (no local users) still
 * reaches only paris's subjects: the hub applies the site user's permissions to the whole leaf connection.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { makeSecurity, type SecurityPaths } from '../../deploy/security/make-security.js';
import { ensureRuntime } from '../../scripts/lib/runtime.js';
import { startStack, type StackHandle } from '../../scripts/lib/stack.js';
import { startLeafNode, type RunningLeafNode } from '../support/leaf-node.js';
import { waitFor } from '../support/questdb.js';
import { freePort } from '../support/processes.js';

const run = Date.now().toString(36);
const BERLIN_GW = `berlin-gw-${run}`;
const PARIS_GW = `paris-gw-${run}`;
const STREAM = `SITES_${run}`;
const root = mkdtempSync(join(tmpdir(), 'leaf-security-'));
let secrets: SecurityPaths;
let stack: StackHandle;
const leaves: RunningLeafNode[] = [];
const connections: NatsConnection[] = [];

const seed = (file: string): Uint8Array => new TextEncoder().encode(readFileSync(file, 'utf8').trim());
/** freePort() can hand out a port twice (each is released at once): the stack's fourteen ports must differ. */
const taken = new Set<number>();
async function port(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (!taken.has(p)) {
      taken.add(p);
      return p;
    }
  }
}
const triple = async (): Promise<[number, number, number]> => [await port(), await port(), await port()];

before(async () => {
  secrets = makeSecurity({ out: join(root, 'secrets'), hosts: ['127.0.0.1', 'localhost'], edges: [], sites: { berlin: [BERLIN_GW], paris: [PARIS_GW] }, schemaBucket: 'schemas', days: 2 });
  const leafPorts = await triple();
  stack = await startStack({
    dir: join(root, 'stack'),
    security: secrets.dir,
    ports: { natsClient: await triple(), natsCluster: await triple(), natsMonitor: await triple(), natsLeafnode: leafPorts, questdbHttp: await port(), questdbPg: await port() },
  });
  const hub = await connect({ servers: stack.natsUrls, authenticator: nkeyAuthenticator(seed(secrets.hubSeedFile)), tls: { caFile: secrets.caFile } });
  connections.push(hub);
  await (await jetstreamManager(hub)).streams.add({ name: STREAM, subjects: [`events.${BERLIN_GW}.*`, `events.${PARIS_GW}.*`], num_replicas: 3 });

  const { natsServer } = await ensureRuntime();
  const hubUrls = leafPorts.map((p) => `nats-leaf://127.0.0.1:${p}`);
  const uplink = (site: string) => ({ nkeySeed: readFileSync(secrets.siteSeedFile(site), 'utf8').trim(), caFile: secrets.caFile });
  leaves.push(
    await startLeafNode(
      natsServer,
      { name: `leaf-berlin-${run}`, host: '127.0.0.1', clientPort: await port(), monitorPort: await port(), hubUrls, uplink: uplink('berlin'), localAuthorization: readFileSync(secrets.siteLeafAuthorizationConf('berlin'), 'utf8') },
      join(root, 'leaf-berlin'),
    ),
    // paris's seed, but no users of its own: anyone who reaches it can publish anything into it.
    await startLeafNode(natsServer, { name: `leaf-paris-open-${run}`, host: '127.0.0.1', clientPort: await port(), monitorPort: await port(), hubUrls, uplink: uplink('paris') }, join(root, 'leaf-paris')),
  );
});

after(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  for (const leaf of leaves) await leaf.stop().catch(() => undefined);
  await stack?.stop();
  rmSync(root, { recursive: true, force: true });
});

async function stored(subject: string): Promise<number> {
  const info = await (await jetstreamManager(connections[0]!)).streams.info(STREAM, { subjects_filter: subject });
  return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
}

test('a gateway publishes through its site leaf to the hub stream, and only its own subjects', async () => {
  const gateway = await connect({ servers: leaves[0]!.url, authenticator: nkeyAuthenticator(seed(secrets.edgeSeedFile(BERLIN_GW))), inboxPrefix: `_INBOX_${BERLIN_GW}` });
  connections.push(gateway);
  const js = jetstream(gateway, { timeout: 3000 });
  const ack = await js.publish(`events.${BERLIN_GW}.0`, new Uint8Array([1]), { msgID: `${run}-1` });
  assert.equal(ack.stream, STREAM, "the hub's stream acknowledged the publish through the leaf (the leaf has no JetStream)");
  await assert.rejects(js.publish(`events.${PARIS_GW}.0`, new Uint8Array([2]), { msgID: `${run}-2` }), 'the leaf refuses another agent subject');
  assert.equal(await stored(`events.${PARIS_GW}.*`), 0);
});

test("a leaf with a site's seed reaches only that site's subjects, whatever its own listener allows", async () => {
  const anyone = await connect({ servers: leaves[1]!.url, inboxPrefix: `_INBOX_${PARIS_GW}` });
  connections.push(anyone);
  const js = jetstream(anyone, { timeout: 3000 });
  const ack = await js.publish(`events.${PARIS_GW}.0`, new Uint8Array([3]), { msgID: `${run}-3` });
  assert.equal(ack.stream, STREAM, "paris's own subject goes through");
  await assert.rejects(js.publish(`events.${BERLIN_GW}.0`, new Uint8Array([4]), { msgID: `${run}-4` }), "berlin's subject is not paris's to publish");
  assert.equal(await stored(`events.${BERLIN_GW}.*`), 1, "only berlin's own event is under berlin's subjects");
  // Nor may paris's leaf receive berlin's replies: a subscription there to berlin's inbox gets nothing. The same
  // spy on paris's own inbox must hear paris's PubAck, or "nothing heard" would prove nothing (interest not yet at
  // the hub, say).
  const spy = await connect({ servers: leaves[1]!.url });
  connections.push(spy);
  let overheard = 0;
  let heardOwn = 0;
  const sub = spy.subscribe(`_INBOX_${BERLIN_GW}.>`, { callback: () => void overheard++ });
  const own = spy.subscribe(`_INBOX_${PARIS_GW}.>`, { callback: () => void heardOwn++ });
  await spy.flush();
  await js.publish(`events.${PARIS_GW}.1`, new Uint8Array([6]), { msgID: `${run}-6` });
  assert.ok(await waitFor(async () => heardOwn, (n) => n > 0, 5000, 50), "the spy hears paris's own PubAck");
  const gateway = connections[1]!;
  await jetstream(gateway).publish(`events.${BERLIN_GW}.1`, new Uint8Array([5]), { msgID: `${run}-5` });
  await new Promise((r) => setTimeout(r, 1000));
  sub.unsubscribe();
  own.unsubscribe();
  assert.equal(overheard, 0, "berlin's PubAcks never reach paris's leaf");
});
