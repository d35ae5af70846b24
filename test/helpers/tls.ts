/**
 * Certificates for TLS tests, made with the openssl CLI: a certificate authority, a server
 * certificate for `localhost` / 127.0.0.1 signed by it (key owned by postgres, 0600, as the
 * server demands), client certificates whose CN is a database role (for `cert` authentication,
 * key owned by the client's OS user, 0600, as libpq demands), and a second, unrelated CA.
 */
import path from 'node:path';
import { POSTGRES_USER, makeTempDir, runAs } from './system.js';

export interface TestPki {
  dir: string;
  caCert: string;
  /** A CA that signed nothing here: verify-ca / verify-full against it must fail. */
  otherCaCert: string;
  serverCert: string;
  serverKey: string;
  /** postgresql.conf settings for TLS with these files (client certificates checked against the CA). */
  serverConf: Record<string, string>;
  /** A client certificate and key (CN = `role`), owned by `osUser`. */
  clientCert(role: string, osUser: string): Promise<{ cert: string; key: string }>;
}

async function openssl(args: string[]): Promise<void> {
  await runAs('root', 'openssl', args, { check: true });
}

async function selfSignedCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', key, '-out', cert]);
  return { cert, key };
}

/** Key + CSR for `cn`, signed by the CA, with `ext` (an openssl extension line) when given. */
async function issue(dir: string, name: string, cn: string, ca: { cert: string; key: string }, ext?: string): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  await openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', key, '-out', csr]);
  const args = ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', cert];
  if (ext) {
    const extFile = path.join(dir, `${name}.ext`);
    await runAs('root', 'tee', [extFile], { input: `${ext}\n`, check: true });
    args.push('-extfile', extFile);
  }
  await openssl(args);
  return { cert, key };
}

export async function createTestPki(): Promise<TestPki> {
  const dir = await makeTempDir('pki-', { mode: 0o755 });
  const ca = await selfSignedCa(dir, 'ca');
  const other = await selfSignedCa(dir, 'other-ca');
  const server = await issue(dir, 'server', 'localhost', ca, 'subjectAltName = DNS:localhost, IP:127.0.0.1');
  await runAs('root', 'chown', [POSTGRES_USER, server.key], { check: true });
  await runAs('root', 'chmod', ['0600', server.key], { check: true });
  await runAs('root', 'chmod', ['0644', server.cert, ca.cert, other.cert], { check: true });
  return {
    dir,
    caCert: ca.cert,
    otherCaCert: other.cert,
    serverCert: server.cert,
    serverKey: server.key,
    serverConf: { ssl: 'on', ssl_cert_file: server.cert, ssl_key_file: server.key, ssl_ca_file: ca.cert },
    async clientCert(role, osUser) {
      const c = await issue(dir, `client-${role}`, role, ca);
      await runAs('root', 'chown', [osUser, c.key, c.cert], { check: true });
      await runAs('root', 'chmod', ['0600', c.key], { check: true });
      return c;
    },
  };
}
