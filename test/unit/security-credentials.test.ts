import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { edgePermissions, makeSecurity, readQuestDbCredentials } from '../../deploy/security/make-security.js';
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { natsAuthOptions, natsAuthProblems, serverIdentityCheck } from '../../shared/nats-auth.js';

test('an edge user may publish only its own subjects and the schema watch, and receive only its own replies', () => {
  const p = edgePermissions('gw-1', 'schemas');
  assert.ok(p.publish.includes('events.gw-1.*'));
  assert.ok(p.publish.includes('dlq.gw-1'));
  assert.deepEqual(p.subscribe, ['_INBOX_gw-1.>']);
  for (const subject of p.publish) {
    assert.ok(!subject.includes('>') || subject.includes('KV_schemas'), `${subject}: wildcards only on the schema bucket's API`);
    assert.ok(!/EVENTS|DLQ|ALERTS|STREAM\.(DELETE|PURGE|UPDATE|CREATE)/.test(subject), `${subject}: no stream administration`);
  }
});

test('make-security makes certificates, seeds and configs, keeps them when run again, and refuses bad agent ids', () => {
  const dir = mkdtempSync(join(tmpdir(), 'secrets-'));
  try {
    const p = makeSecurity({ out: dir, hosts: ['127.0.0.1', 'nats.example.net'], edges: ['gw-1'], schemaBucket: 'schemas', days: 2 });
    const hubSeed = readFileSync(p.hubSeedFile, 'utf8');
    const edgeSeed = readFileSync(p.edgeSeedFile('gw-1'), 'utf8');
    assert.match(edgeSeed, /^SU[A-Z2-7]{56}\n$/);
    assert.equal(statSync(p.edgeSeedFile('gw-1')).mode & 0o777, 0o600, 'seeds are private');
    assert.match(readFileSync(p.serverCertFile, 'utf8'), /BEGIN CERTIFICATE/);
    const conf = readFileSync(p.natsClientConf, 'utf8');
    assert.match(conf, /"events\.gw-1\.\*"/);
    const credentials = readQuestDbCredentials(dir);
    assert.equal(credentials.analyst.user, 'analyst');
    assert.match(readFileSync(p.questdbConf, 'utf8'), /pg\.readonly\.user\.enabled=true/);

    makeSecurity({ out: dir, hosts: ['127.0.0.1', 'nats.example.net'], edges: ['gw-2'], schemaBucket: 'schemas', days: 2 });
    assert.equal(readFileSync(p.hubSeedFile, 'utf8'), hubSeed, 'the hub seed is kept');
    assert.equal(readFileSync(p.edgeSeedFile('gw-1'), 'utf8'), edgeSeed, 'an existing edge keeps its seed');
    const both = readFileSync(p.natsClientConf, 'utf8');
    assert.match(both, /"events\.gw-1\.\*"/);
    assert.match(both, /"events\.gw-2\.\*"/);
    assert.deepEqual(readQuestDbCredentials(dir), credentials, 'QuestDB passwords are kept');

    assert.throws(() => makeSecurity({ out: dir, hosts: ['127.0.0.1'], edges: ['gw.1'], schemaBucket: 'schemas', days: 2 }), /agent id/);
    assert.throws(() => makeSecurity({ out: dir, hosts: ['127.0.0.1'], edges: ['hub'], schemaBucket: 'schemas', days: 2 }), /reserved/);

    assert.deepEqual(natsAuthProblems({ nkeySeedFile: p.edgeSeedFile('gw-1') }), []);
    assert.ok(natsAuthOptions({ nkeySeedFile: p.edgeSeedFile('gw-1'), tls: { caFile: p.caFile } }).authenticator);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('make-security --mount-dir: the nats confs name the certificates where nats-server finds them (a Secret\'s mount)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'secrets-mount-'));
  try {
    const p = makeSecurity({ out: dir, hosts: ['nats'], edges: ['gw-1'], schemaBucket: 'schemas', days: 2, mountDir: '/etc/nats-security/' });
    for (const file of [p.natsClientConf, p.natsClusterConf]) {
      const conf = readFileSync(file, 'utf8');
      assert.match(conf, /cert_file: "\/etc\/nats-security\/tls\/server\.pem"/);
      assert.match(conf, /key_file: "\/etc\/nats-security\/tls\/server-key\.pem"/);
      assert.match(conf, /ca_file: "\/etc\/nats-security\/tls\/ca\.pem"/);
      assert.ok(!conf.includes(dir), `${file} does not name the output folder`);
    }
    assert.match(readFileSync(p.natsClientConf, 'utf8'), /"events\.gw-1\.\*"/, 'the users are the same');
    assert.equal(p.serverCertFile, join(dir, 'tls', 'server.pem'), 'the files are still written to --out');
    // Without it (as scripts/lib/stack.ts runs it) the confs name the folder itself again.
    makeSecurity({ out: dir, hosts: ['nats'], edges: [], schemaBucket: 'schemas', days: 2 });
    assert.ok(readFileSync(p.natsClientConf, 'utf8').includes(`cert_file: ${JSON.stringify(p.serverCertFile)}`));
    assert.throws(() => makeSecurity({ out: dir, hosts: ['nats'], edges: [], schemaBucket: 'schemas', days: 2, mountDir: 'etc/nats' }), /absolute/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('NATS auth settings that cannot work are named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seed-'));
  try {
    const bad = join(dir, 'bad.nk');
    writeFileSync(bad, 'not a seed\n');
    assert.deepEqual(natsAuthProblems({ nkeySeedFile: bad }), [`nats.nkeySeedFile: ${bad} does not hold an nkey user seed (a line starting with SU)`]);
    assert.match(natsAuthProblems({ nkeySeedFile: join(dir, 'missing.nk') })[0] ?? '', /nats\.nkeySeedFile: ENOENT/);
    assert.deepEqual(natsAuthProblems({ user: 'u' }), ['nats.user and nats.pass must be set together']);
    assert.deepEqual(natsAuthProblems({ user: 'u', pass: 'p', nkeySeedFile: bad }).slice(0, 1), ['nats.user and nats.nkeySeedFile exclude each other: choose one way to authenticate']);
    assert.deepEqual(natsAuthProblems({ tls: { certFile: 'c.pem' } }), ['nats.tls.certFile and nats.tls.keyFile must be set together']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('servers given by IP address: the certificate must name one of them (nats.js upgrades such connections without a server name)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'secrets-ip-'));
  try {
    const p = makeSecurity({ out: dir, hosts: ['10.0.0.11', '10.0.0.12', '10.0.0.13'], edges: [], schemaBucket: 'schemas', days: 2 });
    const x509 = new X509Certificate(readFileSync(p.serverCertFile));
    const cert = { subjectaltname: x509.subjectAltName, subject: { CN: 'nats' } } as unknown as PeerCertificate;
    const check = serverIdentityCheck(['nats://10.0.0.11:4222', 'nats://10.0.0.12:4222']);
    assert.ok(check, 'a check for IP seeds');
    // Node asks about "localhost" when no server name was given: the configured addresses decide.
    assert.equal(check('localhost', cert), undefined, 'a certificate for the nodes\' addresses passes');
    assert.match(String(serverIdentityCheck(['nats://10.9.9.9:4222'])!('localhost', cert)), /names none of the configured addresses 10\.9\.9\.9/);
    // A real host name is checked by Node's own rule.
    assert.match(String(check('nats.example.net', cert)), /does not match|altnames/i);
    assert.equal(serverIdentityCheck(['nats://nats-1.example.net:4222']), undefined, 'host names need nothing extra');
    assert.ok((natsAuthOptions({ tls: { caFile: p.caFile } }, ['nats://10.0.0.11:4222']).tls as { checkServerIdentity?: unknown } | undefined)?.checkServerIdentity, 'wired into the connect options');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
