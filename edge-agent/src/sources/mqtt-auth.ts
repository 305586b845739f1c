/**
 * MQTT device authentication and per-device topic ACLs for the embedded broker.
 *
 * Passwords are stored as scrypt hashes in the format `scrypt$<N>$<r>$<p>$<salt>$<hash>` (salt and hash in
 * base64url, no padding; N a power of two, r and p the scrypt block size and parallelism), e.g.
 *   scrypt$16384$8$1$3q2-7wX0...$Zk1...
 * Make one with `hashPassword()` or from a shell (the password is read from stdin, not argv, so it stays out of
 * the shell history and `ps`):
 *   npx tsx edge-agent/src/sources/mqtt-auth.ts hash-password < password.txt
 *
 * Verification runs scrypt on the libuv thread pool (never on the event loop), at most two at a time, and
 * compares in constant time. A device that verified once is remembered by an HMAC of its password under a
 * per-process random key, so a reconnect storm of thousands of devices does not cost thousands of scrypt runs.
 * Unknown user names cost the same scrypt run as known ones, so response time does not tell which names exist.
 */
import { createHash, createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { ConfigError, readConfigFile, validateConfig } from '../../../shared/config.js';

export interface MqttDevice {
  /** MQTT user name the device connects with. */
  username: string;
  /** Plain-text password: for tests and demos only; prefer passwordHash. */
  password?: string;
  /** scrypt hash of the password (`scrypt$N$r$p$salt$hash`). */
  passwordHash?: string;
  /** The device's id: `{deviceId}` in the topic ACL, and the MQTT client id it must use. */
  deviceId: string;
}

export interface MqttAuthConfig {
  mode: 'none' | 'credentials';
  devices: MqttDevice[];
  file?: string;
  publishTopics: string[];
  subscribeTopics: string[];
}

/** Same characters as the schemas' device_id, and never `/`, `+` or `#`, so it is one topic level. */
export const DEVICE_ID_PATTERN = '^[A-Za-z0-9._:-]{1,128}$';

export const mqttDeviceSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['username', 'deviceId'],
  properties: {
    username: { type: 'string', minLength: 1, maxLength: 256, description: 'MQTT user name of the device.' },
    password: { type: 'string', minLength: 1, description: 'Plain-text password (tests and demos only; prefer passwordHash).' },
    passwordHash: { type: 'string', pattern: '^scrypt\\$', description: 'scrypt hash: `scrypt$N$r$p$salt$hash` (see mqtt-auth.ts).' },
    deviceId: { type: 'string', pattern: DEVICE_ID_PATTERN, description: 'Device id: its topics and its MQTT client id.' },
  },
} as const;

export const mqttAuthConfigSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  description: 'Who may connect to the embedded broker and which topics each device may use.',
  properties: {
    mode: {
      enum: ['none', 'credentials'],
      default: 'none',
      description:
        '`none`: any client may connect and publish on any topic (local demo only, NOT for production); `credentials`: devices log in with a user name and password and are confined to their own topics.',
    },
    devices: { type: 'array', items: mqttDeviceSchema, default: [], description: 'Device credentials.' },
    file: { type: 'string', description: 'JSON or YAML file `{ devices: [...] }` with more devices, read at start.' },
    publishTopics: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      default: ['devices/{deviceId}/#'],
      description: 'Topic filters a device may publish on; `{deviceId}` is replaced by its id. Anything else closes the connection.',
    },
    subscribeTopics: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      default: ['devices/{deviceId}/#'],
      description: 'Topic filters a device may subscribe to (a subscription must lie inside one); others get SUBACK 0x80.',
    },
  },
} as const;

// ---------------------------------------------------------------------------------------------------------------
// Password hashes

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_SCRYPT_PARAMS: ScryptParams = { N: 16384, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** scrypt needs 128·N·r bytes; refuse hashes that would need more (a config typo must not eat the gateway's RAM). */
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;

export interface ParsedPasswordHash extends ScryptParams {
  salt: Buffer;
  hash: Buffer;
}

/** Parses `scrypt$N$r$p$salt$hash`; throws an Error saying what is wrong. */
export function parsePasswordHash(encoded: string): ParsedPasswordHash {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') throw new Error('password hash must look like scrypt$N$r$p$salt$hash');
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (!Number.isInteger(N) || N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0) throw new Error(`scrypt N must be a power of two from 2 to 2^20, got ${parts[1]}`);
  if (!Number.isInteger(r) || r < 1 || r > 32) throw new Error(`scrypt r must be 1..32, got ${parts[2]}`);
  if (!Number.isInteger(p) || p < 1 || p > 16) throw new Error(`scrypt p must be 1..16, got ${parts[3]}`);
  if (128 * N * r > MAX_SCRYPT_MEMORY) throw new Error(`scrypt N=${N} r=${r} needs more than ${MAX_SCRYPT_MEMORY / 1048576} MiB`);
  const base64url = /^[A-Za-z0-9_-]+$/;
  if (!base64url.test(parts[4]!) || !base64url.test(parts[5]!)) throw new Error('password hash salt and hash must be base64url');
  const salt = Buffer.from(parts[4]!, 'base64url');
  const hash = Buffer.from(parts[5]!, 'base64url');
  if (salt.length < 8) throw new Error(`password hash salt must be at least 8 bytes, got ${salt.length}`);
  if (hash.length < 16) throw new Error(`password hash must be at least 16 bytes, got ${hash.length}`);
  return { N, r, p, salt, hash };
}

function scryptAsync(password: Buffer, salt: Buffer, keylen: number, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 128 * params.N * params.r + 1048576 };
  return new Promise((resolve, reject) => scrypt(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key))));
}

/** Hashes a password for the config (`passwordHash`). */
export async function hashPassword(password: string | Buffer, params: ScryptParams = DEFAULT_SCRYPT_PARAMS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await scryptAsync(Buffer.from(password), salt, KEY_BYTES, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Whether `password` matches the hash; constant-time comparison. Throws when the hash is malformed. */
export async function verifyPassword(password: string | Buffer, encoded: string | ParsedPasswordHash): Promise<boolean> {
  const parsed = typeof encoded === 'string' ? parsePasswordHash(encoded) : encoded;
  const actual = await scryptAsync(Buffer.from(password), parsed.salt, parsed.hash.length, parsed);
  return timingSafeEqual(actual, parsed.hash);
}

// ---------------------------------------------------------------------------------------------------------------
// Topic ACL

/** A valid MQTT topic filter: `+` and `#` only as whole levels, `#` only last ([MQTT-4.7.1-2], [MQTT-4.7.1-3]). */
export function isValidTopicFilter(filter: string): boolean {
  if (filter.length === 0) return false;
  const levels = filter.split('/');
  return levels.every((level, i) => {
    if (level === '#') return i === levels.length - 1;
    if (level === '+') return true;
    return !level.includes('#') && !level.includes('+');
  });
}

/** Whether `topic` (no wildcards) matches `filter`. Wildcards at the first level never match `$` topics ([MQTT-4.7.2-1]). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true; // also matches the parent level: `a/#` matches `a`
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Whether every topic that `filter` can match is also matched by `pattern` (a subscription inside the ACL). */
export function filterCovers(pattern: string, filter: string): boolean {
  const p = pattern.split('/');
  const f = filter.split('/');
  if (filter.startsWith('$') !== pattern.startsWith('$') && (p[0] === '+' || p[0] === '#')) return false;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#') return true;
    if (i >= f.length) return false;
    if (f[i] === '#') return false; // the filter reaches deeper than the pattern allows
    if (p[i] === '+') continue;
    if (f[i] !== p[i]) return false; // a literal level: the filter must name it (its `+` would reach others)
  }
  return f.length === p.length;
}

/** The ACL of one device: its publish and subscribe filters with `{deviceId}` replaced. */
export class DeviceAcl {
  readonly publish: string[];
  readonly subscribe: string[];

  constructor(
    readonly deviceId: string,
    publishTopics: readonly string[],
    subscribeTopics: readonly string[],
  ) {
    this.publish = publishTopics.map((p) => p.replaceAll('{deviceId}', deviceId));
    this.subscribe = subscribeTopics.map((p) => p.replaceAll('{deviceId}', deviceId));
  }

  mayPublish(topic: string): boolean {
    return this.publish.some((filter) => topicMatches(filter, topic));
  }

  maySubscribe(filter: string): boolean {
    return this.subscribe.some((pattern) => filterCovers(pattern, filter));
  }
}

/**
 * A device must connect with its id as MQTT client id, or `<deviceId>/<anything>` for several connections.
 * Client ids are the broker's session keys ([MQTT-3.1.4-2]: a new connection with the same id takes the old one
 * over), so without this rule one device could disconnect another or resume its session. Device ids never contain
 * `/`, so the namespaces of two devices cannot overlap.
 */
export function clientIdBelongsTo(deviceId: string, clientId: string): boolean {
  return clientId === deviceId || clientId.startsWith(`${deviceId}/`);
}

// ---------------------------------------------------------------------------------------------------------------
// Authenticator

export type AuthOutcome = { ok: true; deviceId: string } | { ok: false; /** CONNACK return code. */ returnCode: 4 | 5; reason: string };

type Secret = { kind: 'hash'; hash: ParsedPasswordHash } | { kind: 'plain'; digest: Buffer };

interface Credential {
  deviceId: string;
  secret: Secret;
}

/** Fails on purpose (nobody's password hashes to zeros): unknown user names pay the same scrypt run. */
const DUMMY_HASH = parsePasswordHash(
  `scrypt$${DEFAULT_SCRYPT_PARAMS.N}$${DEFAULT_SCRYPT_PARAMS.r}$${DEFAULT_SCRYPT_PARAMS.p}$${Buffer.alloc(SALT_BYTES).toString('base64url')}$${Buffer.alloc(KEY_BYTES).toString('base64url')}`,
);
const MAX_CONCURRENT_SCRYPT = 2;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

export class DeviceAuthenticator {
  private readonly credentials = new Map<string, Credential>();
  /** username → HMAC of the password that last verified (see the file comment). */
  private readonly verified = new Map<string, Buffer>();
  private readonly cacheKey = randomBytes(32);
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  /** `devices` must have passed `checkDevices` (the source does that at start). */
  constructor(devices: readonly MqttDevice[]) {
    for (const device of devices) {
      const secret: Secret =
        device.passwordHash !== undefined
          ? { kind: 'hash', hash: parsePasswordHash(device.passwordHash) }
          : { kind: 'plain', digest: sha256(Buffer.from(device.password ?? '')) };
      this.credentials.set(device.username, { deviceId: device.deviceId, secret });
    }
  }

  async authenticate(username: string | undefined, password: Buffer | undefined): Promise<AuthOutcome> {
    if (username === undefined || password === undefined) {
      return { ok: false, returnCode: 5, reason: 'no user name and password (the broker requires credentials)' };
    }
    const credential = this.credentials.get(username);
    const refused: AuthOutcome = { ok: false, returnCode: 4, reason: 'unknown user name or wrong password' };
    if (!credential) {
      await this.withScryptSlot(() => verifyPassword(password, DUMMY_HASH));
      return refused;
    }
    let ok: boolean;
    if (credential.secret.kind === 'plain') {
      ok = timingSafeEqual(sha256(password), credential.secret.digest);
    } else {
      const mac = createHmac('sha256', this.cacheKey).update(password).digest();
      const known = this.verified.get(username);
      if (known && timingSafeEqual(known, mac)) return { ok: true, deviceId: credential.deviceId };
      const hash = credential.secret.hash;
      ok = await this.withScryptSlot(() => verifyPassword(password, hash));
      if (ok) this.verified.set(username, mac);
    }
    return ok ? { ok: true, deviceId: credential.deviceId } : refused;
  }

  private async withScryptSlot<T>(run: () => Promise<T>): Promise<T> {
    if (this.running >= MAX_CONCURRENT_SCRYPT) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      return await run();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

/**
 * The devices of `auth` (inline and from `auth.file`), checked: exactly one of password or passwordHash each, a
 * well-formed hash, unique user names, valid topic filters. Throws ConfigError naming every problem.
 */
export function loadDevices(auth: MqttAuthConfig, where = 'config.sources.mqtt.auth'): MqttDevice[] {
  const problems: string[] = [];
  const devices: Array<{ device: MqttDevice; at: string }> = auth.devices.map((device, i) => ({ device, at: `${where}.devices.${i}` }));
  if (auth.file !== undefined) {
    const fromFile = validateConfig<{ devices: MqttDevice[] }>(
      { type: 'object', additionalProperties: false, required: ['devices'], properties: { devices: { type: 'array', items: mqttDeviceSchema } } },
      readConfigFile(auth.file),
      `MQTT device file ${auth.file}`,
    );
    fromFile.devices.forEach((device, i) => devices.push({ device, at: `${auth.file}: devices.${i}` }));
  }
  const seen = new Map<string, string>();
  for (const { device, at } of devices) {
    if ((device.password === undefined) === (device.passwordHash === undefined)) {
      problems.push(`${at} (user "${device.username}") needs exactly one of password or passwordHash`);
    }
    if (device.passwordHash !== undefined) {
      try {
        parsePasswordHash(device.passwordHash);
      } catch (error) {
        problems.push(`${at}.passwordHash: ${(error as Error).message}`);
      }
    }
    const first = seen.get(device.username);
    if (first !== undefined) problems.push(`${at}: user name "${device.username}" is already used by ${first}`);
    else seen.set(device.username, at);
  }
  if (auth.mode === 'credentials' && devices.length === 0) problems.push(`${where}.mode is credentials but no device is configured (devices or file)`);
  for (const [field, filters] of [['publishTopics', auth.publishTopics], ['subscribeTopics', auth.subscribeTopics]] as const) {
    filters.forEach((filter, i) => {
      if (!isValidTopicFilter(filter)) problems.push(`${where}.${field}.${i} "${filter}" is not a valid MQTT topic filter`);
    });
  }
  if (problems.length > 0) throw new ConfigError(`invalid MQTT authentication config:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return devices.map((d) => d.device);
}

// ---------------------------------------------------------------------------------------------------------------
// CLI: `npx tsx edge-agent/src/sources/mqtt-auth.ts hash-password` reads a password from stdin, prints its hash.

async function main(argv: string[]): Promise<number> {
  if (argv[0] !== 'hash-password') {
    process.stderr.write('usage: npx tsx edge-agent/src/sources/mqtt-auth.ts hash-password < file-with-the-password\n');
    return 2;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  if (password.length === 0) {
    process.stderr.write('empty password on stdin\n');
    return 2;
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
