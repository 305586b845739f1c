import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../shared/config.js';
import {
  clientIdBelongsTo,
  DeviceAcl,
  DeviceAuthenticator,
  filterCovers,
  hashPassword,
  isValidTopicFilter,
  loadDevices,
  parsePasswordHash,
  topicMatches,
  verifyPassword,
  type MqttAuthConfig,
} from '../../edge-agent/src/sources/mqtt-auth.js';

// Small scrypt cost so the tests stay fast; the format carries N, so verification uses what the hash says.
const FAST = { N: 1024, r: 8, p: 1 };

test('a password hash has the documented format and verifies only the right password', async () => {
  const hash = await hashPassword('s3cret-pass', FAST);
  assert.match(hash, /^scrypt\$1024\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
  assert.equal(await verifyPassword('s3cret-pass', hash), true);
  assert.equal(await verifyPassword(Buffer.from('s3cret-pass'), hash), true);
  assert.equal(await verifyPassword('s3cret-pasS', hash), false);
  assert.equal(await verifyPassword('', hash), false);
  assert.notEqual(await hashPassword('s3cret-pass', FAST), hash, 'every hash has its own salt');
});

test('the default hash cost is scrypt N=16384, r=8, p=1', async () => {
  assert.match(await hashPassword('x'), /^scrypt\$16384\$8\$1\$/);
});

test('malformed or dangerous password hashes are refused with the reason', () => {
  assert.throws(() => parsePasswordHash('bcrypt$xyz'), /must look like scrypt\$N\$r\$p\$salt\$hash/);
  assert.throws(() => parsePasswordHash('scrypt$1000$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA'), /N must be a power of two/);
  assert.throws(() => parsePasswordHash(`scrypt$${2 ** 20}$32$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA`), /needs more than 256 MiB/);
  assert.throws(() => parsePasswordHash('scrypt$1024$8$1$AA$AAAAAAAAAAAAAAAAAAAAAA'), /salt must be at least 8 bytes/);
  assert.throws(() => parsePasswordHash('scrypt$1024$8$1$AAAAAAAAAAA$AA=='), /base64url/);
});

test('the authenticator accepts the right password and refuses wrong, unknown and missing credentials', async () => {
  const auth = new DeviceAuthenticator([
    { username: 'dev-a', deviceId: 'dev-a', passwordHash: await hashPassword('pw-a', FAST) },
    { username: 'user-b', deviceId: 'dev-b', password: 'pw-b' },
  ]);
  assert.deepEqual(await auth.authenticate('dev-a', Buffer.from('pw-a')), { ok: true, deviceId: 'dev-a' });
  // Second time: from the verified cache (same answer).
  assert.deepEqual(await auth.authenticate('dev-a', Buffer.from('pw-a')), { ok: true, deviceId: 'dev-a' });
  assert.deepEqual(await auth.authenticate('user-b', Buffer.from('pw-b')), { ok: true, deviceId: 'dev-b' });
  const wrong = await auth.authenticate('dev-a', Buffer.from('pw-b'));
  assert.deepEqual(wrong, { ok: false, returnCode: 4, reason: 'unknown user name or wrong password' });
  assert.deepEqual(await auth.authenticate('user-b', Buffer.from('pw-a')), wrong);
  assert.deepEqual(await auth.authenticate('nobody', Buffer.from('pw-a')), wrong, 'unknown names get the same answer');
  const missing = await auth.authenticate(undefined, undefined);
  assert.equal(missing.ok, false);
  assert.equal(!missing.ok && missing.returnCode, 5);
  assert.equal((await auth.authenticate('dev-a', undefined)).ok, false);
});

test('a wrong password after a cached success is still refused', async () => {
  const auth = new DeviceAuthenticator([{ username: 'dev-a', deviceId: 'dev-a', passwordHash: await hashPassword('pw-a', FAST) }]);
  assert.equal((await auth.authenticate('dev-a', Buffer.from('pw-a'))).ok, true);
  assert.equal((await auth.authenticate('dev-a', Buffer.from('pw-a '))).ok, false);
  assert.equal((await auth.authenticate('dev-a', Buffer.from('pw-a'))).ok, true);
});

const authConfig = (over: Partial<MqttAuthConfig> = {}): MqttAuthConfig => ({
  mode: 'credentials',
  devices: [],
  publishTopics: ['devices/{deviceId}/#'],
  subscribeTopics: ['devices/{deviceId}/#'],
  ...over,
});

test('device lists are checked at start, naming every problem', () => {
  assert.throws(
    () =>
      loadDevices(
        authConfig({
          devices: [
            { username: 'a', deviceId: 'a' },
            { username: 'b', deviceId: 'b', password: 'x', passwordHash: 'scrypt$1$1$1$x$y' },
            { username: 'a', deviceId: 'c', passwordHash: 'scrypt$3$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA' },
          ],
          publishTopics: ['devices/#/x'],
        }),
      ),
    (error: Error) =>
      error instanceof ConfigError &&
      error.message.includes('config.sources.mqtt.auth.devices.0 (user "a") needs exactly one of password or passwordHash') &&
      error.message.includes('config.sources.mqtt.auth.devices.1 (user "b") needs exactly one of password or passwordHash') &&
      error.message.includes('config.sources.mqtt.auth.devices.2.passwordHash: scrypt N must be a power of two') &&
      error.message.includes('devices.2: user name "a" is already used by config.sources.mqtt.auth.devices.0') &&
      error.message.includes('publishTopics.0 "devices/#/x" is not a valid MQTT topic filter'),
  );
  assert.throws(() => loadDevices(authConfig()), /mode is credentials but no device is configured/);
  assert.deepEqual(loadDevices(authConfig({ mode: 'none' })), []);
});

test('devices can come from a YAML file as well', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mqtt-auth-'));
  const file = join(dir, 'devices.yaml');
  writeFileSync(file, 'devices:\n  - { username: u1, deviceId: d1, password: p1 }\n');
  const devices = loadDevices(authConfig({ devices: [{ username: 'u0', deviceId: 'd0', password: 'p0' }], file }));
  assert.deepEqual(devices.map((d) => d.deviceId), ['d0', 'd1']);
  writeFileSync(file, 'devices:\n  - { username: u1, deviceId: "d/1", password: p1 }\n');
  assert.throws(() => loadDevices(authConfig({ file })), (e: Error) => e instanceof ConfigError && /deviceId must match pattern/.test(e.message));
});

test('topic filters match topics level by level, with + and #', () => {
  const table: Array<[string, string, boolean]> = [
    ['devices/d1/#', 'devices/d1/telemetry', true],
    ['devices/d1/#', 'devices/d1/a/b/c', true],
    ['devices/d1/#', 'devices/d1', true], // [MQTT-4.7.1-2]: # also matches the parent level
    ['devices/d1/#', 'devices/d10/telemetry', false],
    ['devices/d1/#', 'devices/d2/telemetry', false],
    ['devices/d1/#', 'devices', false],
    ['devices/+/telemetry', 'devices/d1/telemetry', true],
    ['devices/+/telemetry', 'devices/d1/status', false],
    ['devices/+/telemetry', 'devices/d1/telemetry/x', false],
    ['#', '$SYS/broker', false], // [MQTT-4.7.2-1]
    ['+/broker', '$SYS/broker', false],
    ['$SYS/#', '$SYS/broker', true],
  ];
  for (const [filter, topic, expected] of table) assert.equal(topicMatches(filter, topic), expected, `${filter} vs ${topic}`);
});

test('a subscription is allowed only when it lies inside an ACL filter', () => {
  const table: Array<[string, string, boolean]> = [
    ['devices/d1/#', 'devices/d1/#', true],
    ['devices/d1/#', 'devices/d1/commands', true],
    ['devices/d1/#', 'devices/d1/+/x', true],
    ['devices/d1/#', 'devices/d1', true],
    ['devices/d1/#', 'devices/+/commands', false], // + would reach other devices
    ['devices/d1/#', 'devices/#', false],
    ['devices/d1/#', '#', false],
    ['devices/d1/#', 'devices/d2/#', false],
    ['devices/d1/#', '$SYS/#', false],
    ['devices/d1/+', 'devices/d1/a', true],
    ['devices/d1/+', 'devices/d1/a/b', false],
    ['devices/d1/+', 'devices/d1/#', false],
    ['devices/+/status', 'devices/d9/status', true],
    ['devices/+/status', 'devices/+/status', true],
    ['#', '$SYS/#', false],
  ];
  for (const [pattern, filter, expected] of table) assert.equal(filterCovers(pattern, filter), expected, `${pattern} covers ${filter}`);
});

test('a device ACL replaces {deviceId} and confines publish and subscribe to its topics', () => {
  const acl = new DeviceAcl('dev-a', ['devices/{deviceId}/#'], ['devices/{deviceId}/commands']);
  assert.deepEqual(acl.publish, ['devices/dev-a/#']);
  assert.equal(acl.mayPublish('devices/dev-a/telemetry'), true);
  assert.equal(acl.mayPublish('devices/dev-b/telemetry'), false);
  assert.equal(acl.mayPublish('devices/dev-a-2/telemetry'), false);
  assert.equal(acl.maySubscribe('devices/dev-a/commands'), true);
  assert.equal(acl.maySubscribe('devices/dev-a/telemetry'), false);
  assert.equal(acl.maySubscribe('devices/+/commands'), false);
});

test('topic filter syntax: + and # only as whole levels, # only last', () => {
  for (const ok of ['a/b', 'a/+/c', 'a/#', '#', '+', '{deviceId}/x']) assert.equal(isValidTopicFilter(ok), true, ok);
  for (const bad of ['', 'a/#/c', 'a/b#', 'a+/b']) assert.equal(isValidTopicFilter(bad), false, bad);
});

test('a client id belongs to a device when it is its id or starts with "<id>/"', () => {
  assert.equal(clientIdBelongsTo('dev-a', 'dev-a'), true);
  assert.equal(clientIdBelongsTo('dev-a', 'dev-a/firmware-2'), true);
  assert.equal(clientIdBelongsTo('dev-a', 'dev-ab'), false);
  assert.equal(clientIdBelongsTo('dev-a', 'dev-a-2'), false);
  assert.equal(clientIdBelongsTo('dev-a', 'dev-b'), false);
  assert.equal(clientIdBelongsTo('dev-a', ''), false);
});
