/**
 * `npm run security` and `npm run nats-config` as a user runs them for three hosts: the rendered configs carry each
 * host's address, routes to the other two, TLS for clients and routes and the users, and nats-server itself accepts
 * them (`nats-server -t`, the server's own config check). test/integration/multi-host.test.ts runs such a cluster.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureRuntime, REPO_ROOT } from '../../scripts/lib/runtime.js';

const root = mkdtempSync(join(tmpdir(), 'nats-config-'));
after(() => rmSync(root, { recursive: true, force: true }));

const tsx = (script: string, args: string[]): string =>
  execFileSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, script), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

test('three hosts: security folder, one config per node, each accepted by nats-server -t', async () => {
  const hosts = ['10.20.0.11', '10.20.0.12', '10.20.0.13'];
  const secrets = join(root, 'secrets');
  tsx('deploy/security/make-security.ts', ['--out', secrets, ...hosts.flatMap((h) => ['--host', h]), '--edge', 'gateway-berlin-01']);
  const out = join(root, 'conf');
  const printed = tsx('deploy/nats/render-nats-config.ts', [...hosts.flatMap((h) => ['--host', h]), '--security', secrets, '--out', out, '--store', join(root, 'js')]);
  assert.match(printed, /nats-3\.conf: nats-3 on 10\.20\.0\.13/);

  const { natsServer } = await ensureRuntime();
  for (const [i, host] of hosts.entries()) {
    const file = join(out, `nats-${i + 1}.conf`);
    const conf = readFileSync(file, 'utf8');
    assert.match(conf, new RegExp(`listen: "${host}:4222"`), `nats-${i + 1} listens on its host's address`);
    const routes = [...conf.matchAll(/nats-route:\/\/([\d.]+):6222/g)].map((m) => m[1]);
    assert.deepEqual(routes.sort(), hosts.filter((h) => h !== host).sort(), `nats-${i + 1} routes to the other two hosts`);
    assert.match(conf, /verify: true|verify_and_map|ca_file/, 'TLS with the CA');
    assert.match(conf, /nkey: "U[A-Z0-9]{55}"/, 'nkey users');
    assert.match(conf, /sync_interval: always/, 'JetStream writes are synced before they are acknowledged');
    const check = spawnSync(natsServer, ['-t', '-c', file], { encoding: 'utf8' });
    assert.equal(check.status, 0, `nats-server -t accepts nats-${i + 1}.conf: ${check.stdout}${check.stderr}`);
  }
});

test('a site leaf node: hub nodes with a leaf node listener, the leaf with its site seed and its agents, each accepted by nats-server -t', async () => {
  const hosts = ['10.20.0.11', '10.20.0.12', '10.20.0.13'];
  const secrets = join(root, 'site-secrets');
  tsx('deploy/security/make-security.ts', ['--out', secrets, ...hosts.flatMap((h) => ['--host', h]), '--site', 'berlin=gw-berlin-01,gw-berlin-02']);
  const out = join(root, 'site-conf');
  tsx('deploy/nats/render-nats-config.ts', [...hosts.flatMap((h) => ['--host', h]), '--leafnodes', '--security', secrets, '--out', out, '--store', join(root, 'js')]);
  const printed = tsx('deploy/nats/render-nats-config.ts', ['--site', 'berlin', '--listen', '10.30.0.5', ...hosts.flatMap((h) => ['--host', h]), '--security', secrets, '--out', out]);
  assert.match(printed, /leaf-berlin\.conf: leaf-berlin on 10\.30\.0\.5/);

  const { natsServer } = await ensureRuntime();
  const hub = readFileSync(join(out, 'nats-1.conf'), 'utf8');
  assert.match(hub, /leafnodes \{\n  listen: "10\.20\.0\.11:7422"\n  tls \{/, 'the hub node listens for leaf nodes, with TLS');
  assert.match(hub, /# site leaf node berlin \(agents gw-berlin-01, gw-berlin-02\)/, 'the site user is one of the hub users');
  const leaf = readFileSync(join(out, 'leaf-berlin.conf'), 'utf8');
  assert.doesNotMatch(leaf, /^jetstream/m, 'the leaf has no JetStream of its own');
  assert.deepEqual([...leaf.matchAll(/nats-leaf:\/\/([\d.]+):7422/g)].map((m) => m[1]), hosts, 'the leaf knows every hub node');
  assert.match(leaf, /nkey: "SU[A-Z0-9]+"/, 'the leaf logs in with the site seed');
  assert.equal([...leaf.matchAll(/# edge agent gw-berlin-0\d/g)].length, 2, "the leaf's own users are the site's agents");
  for (const file of ['nats-1.conf', 'leaf-berlin.conf']) {
    const check = spawnSync(natsServer, ['-t', '-c', join(out, file)], { encoding: 'utf8' });
    assert.equal(check.status, 0, `nats-server -t accepts ${file}: ${check.stdout}${check.stderr}`);
  }
});
