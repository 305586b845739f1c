/**
 * How the agent and the hub prove who they are to NATS and check that they talk to the real cluster: the `nats`
 * config keys they share (user/password, nkey seed file, TLS files) and their translation to connect() options.
 * deploy/security/make-security.ts makes the seeds and certificates; deploy/security/README.md explains them.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { nkeyAuthenticator, type ConnectionOptions } from '@nats-io/transport-node';

export interface NatsAuthConfig {
  user?: string;
  pass?: string;
  /** File holding an nkey user seed (SU...). */
  nkeySeedFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/** JSON Schema properties of the keys above, for the agent's and the hub's config schemas. */
export const natsAuthSchemaProperties = {
  user: { type: 'string', description: 'NATS user; unset: no user/password authentication. @default unset' },
  pass: { type: 'string', description: 'NATS password, with `user`. @default unset' },
  nkeySeedFile: {
    type: 'string',
    minLength: 1,
    description: 'File with the nkey seed (SU...) of this NATS user, made by deploy/security/make-security.ts. @default unset',
  },
  tls: {
    type: 'object',
    additionalProperties: false,
    description: 'TLS to the NATS servers. `caFile` verifies the servers (the CA of make-security.ts); `certFile`/`keyFile` only if the servers ask for client certificates. @default unset: plain TCP',
    properties: {
      caFile: { type: 'string', minLength: 1, description: 'CA certificate that signed the servers\' certificates (tls/ca.pem of make-security.ts).' },
      certFile: { type: 'string', minLength: 1, description: 'Client certificate, only for servers that verify clients.' },
      keyFile: { type: 'string', minLength: 1, description: 'Key of certFile.' },
    },
  },
} as const;

/** Problems with the keys above (config paths relative to `nats.`). */
export function natsAuthProblems(config: NatsAuthConfig): string[] {
  const problems: string[] = [];
  if ((config.user === undefined) !== (config.pass === undefined)) problems.push('nats.user and nats.pass must be set together');
  if (config.user !== undefined && config.nkeySeedFile !== undefined) problems.push('nats.user and nats.nkeySeedFile exclude each other: choose one way to authenticate');
  if ((config.tls?.certFile === undefined) !== (config.tls?.keyFile === undefined)) problems.push('nats.tls.certFile and nats.tls.keyFile must be set together');
  if (config.nkeySeedFile !== undefined) {
    try {
      readSeed(config.nkeySeedFile);
    } catch (err) {
      problems.push(`nats.nkeySeedFile: ${(err as Error).message}`);
    }
  }
  return problems;
}

function readSeed(file: string): Uint8Array {
  const seed = readFileSync(file, 'utf8').trim();
  if (!/^SU[A-Z2-7]{56}$/.test(seed)) throw new Error(`${file} does not hold an nkey user seed (a line starting with SU)`);
  return new TextEncoder().encode(seed);
}

/** connect() options for the keys above; `servers` are the seed URLs (see serverIdentityCheck). */
export function natsAuthOptions(config: NatsAuthConfig, servers: readonly string[] = []): Partial<ConnectionOptions> {
  const options: Partial<ConnectionOptions> = {};
  if (config.user !== undefined) Object.assign(options, { user: config.user, pass: config.pass ?? '' });
  if (config.nkeySeedFile !== undefined) options.authenticator = nkeyAuthenticator(readSeed(config.nkeySeedFile));
  if (config.tls !== undefined) {
    const check = serverIdentityCheck(servers);
    options.tls = {
      ...(config.tls.caFile !== undefined ? { caFile: config.tls.caFile } : {}),
      ...(config.tls.certFile !== undefined ? { certFile: config.tls.certFile, keyFile: config.tls.keyFile } : {}),
      ...(check ? { checkServerIdentity: check } : {}),
    };
  }
  return options;
}

/**
 * When the servers are given by IP address: nats.js upgrades the connection to TLS without a server name (SNI cannot
 * carry an address), and Node then checks the certificate against "localhost", which a certificate made for the
 * nodes' addresses does not name: every connection fails its handshake (found by test/integration/multi-host.test.ts).
 * For that case only, the certificate must name one of the configured addresses; it must still be signed by the
 * configured CA (`caFile`), which is checked before. Host names are checked by Node as usual.
 */
export function serverIdentityCheck(servers: readonly string[]): ((host: string, cert: PeerCertificate) => Error | undefined) | undefined {
  const addresses = servers
    .map((url) => {
      try {
        return new URL(url.includes('://') ? url : `nats://${url}`).hostname.replace(/^\[|\]$/g, '');
      } catch {
        return '';
      }
    })
    .filter((host) => isIP(host) !== 0);
  if (addresses.length === 0) return undefined;
  return (host, cert) => {
    if (host !== 'localhost' && host !== '') return checkServerIdentity(host, cert);
    if (addresses.some((address) => checkServerIdentity(address, cert) === undefined)) return undefined;
    return new Error(`the server's certificate names none of the configured addresses ${addresses.join(', ')} (subject alternative names: ${cert.subjectaltname ?? 'none'})`);
  };
}
