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
