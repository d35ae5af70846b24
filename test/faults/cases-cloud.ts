/**
 * barman-cloud-* against a real S3 (s3rver on 127.0.0.1, started by the first cloud case):
 * WAL uploads killed mid-transfer (SIGKILL, SIGTERM) and sent again, the object store gone,
 * hostile WAL names for the restore side, a secret key that must never be printed. The
 * acknowledged-WAL invariant for the cloud: what an exit 0 uploaded restores byte for byte.
 */
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { startS3rver, type ObjectStoreServer } from '../helpers/object-stores.js';
import { POSTGRES_USER } from '../helpers/system.js';
import { describe, exec, REPO, NODE, type CmdOptions, type CmdResult } from './exec.js';
import { firstLine, how, synthSegment } from './common.js';
import type { CaseContext, FaultCase } from './types.js';
import { SECRETS } from './world.js';

let s3: ObjectStoreServer | null = null;
const BUCKET = 'faults';
const SERVER = 'cloudpg';

async function store(): Promise<ObjectStoreServer> {
  if (!s3) s3 = await startS3rver();
  return s3;
}

export async function stopCloud(): Promise<void> {
  await s3?.stop();
  s3 = null;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function cloudTool(tool: string, args: string[], env: Record<string, string>, opts: CmdOptions = {}): Promise<CmdResult> {
  return exec([NODE, path.join(REPO, 'bin', `${tool}.js`), ...args], { user: POSTGRES_USER, timeoutMs: 120_000, ...opts, env: { ...env, ...(opts.env ?? {}) } });
}

/** A fresh segment written where postgres can read it. */
async function segmentFile(ctx: CaseContext): Promise<{ name: string; file: string; data: Buffer }> {
  const [name, data] = synthSegment();
  const dir = await ctx.world.scratch('cloud-wal', POSTGRES_USER);
  const file = path.join(dir, name);
  await fs.writeFile(file, data);
  await fs.chmod(file, 0o644);
  return { name, file, data };
}

/** Restore `name` from the bucket and compare with `data` (the acknowledged content). */
async function restoresIntact(ctx: CaseContext, st: ObjectStoreServer, name: string, data: Buffer): Promise<CmdResult> {
  const dest = path.join(await ctx.world.scratch('cloud-restore', POSTGRES_USER), name);
  const r = await cloudTool('barman-cloud-wal-restore', [...st.args, st.url(BUCKET), SERVER, name, dest], st.env);
  ctx.expect(r.code === 0, `barman-cloud-wal-restore of the acknowledged ${name}: ${describe(r)}`);
  if (r.code === 0) ctx.expect(sha(await fs.readFile(dest)) === sha(data), `${name} restored from the bucket is the acknowledged content`);
  return r;
}

function uploadKilled(sig: 'SIGKILL' | 'SIGTERM', ms: number, compress: string[]): FaultCase {
  return {
    id: `barman-cloud-wal-archive/${sig}-after-${ms}ms${compress.length ? compress[0] : ''}`,
    process: 'barman-cloud-wal-archive',
    point: `${ms} ms into the upload${compress.length ? ` (${compress[0]})` : ''}`,
    kind: sig,
    servers: [],
    async run(ctx) {
      const st = await store();
      const seg = await segmentFile(ctx);
      const args = [...st.args, ...compress, st.url(BUCKET), SERVER, seg.file];
      const r = await cloudTool('barman-cloud-wal-archive', args, st.env, { killAfter: { ms, signal: sig } });
      // archive_command failed (or succeeded): PostgreSQL sends it again until exit 0.
      const again = r.code === 0 ? r : await cloudTool('barman-cloud-wal-archive', args, st.env);
      ctx.expect(again.code === 0, `the upload sent again succeeds: ${describe(again)}`);
      if (again.code === 0) await restoresIntact(ctx, st, seg.name, seg.data);
      return `${how(r)}; again ${how(again)}; restored intact`;
    },
  };
}

export function cloudCases(): FaultCase[] {
  const c: FaultCase[] = [];
  c.push(uploadKilled('SIGKILL', 400, []));
  c.push(uploadKilled('SIGKILL', 700, ['--gzip']));
  c.push(uploadKilled('SIGTERM', 400, []));
  c.push(uploadKilled('SIGTERM', 600, ['--snappy']));

  // The object store is unreachable; a secret key is in the environment and must not be printed.
  c.push({
    id: 'barman-cloud-wal-archive/endpoint-down-secret',
    process: 'barman-cloud-wal-archive',
    point: 'endpoint refusing connections, secret key in the environment',
    kind: 'ssh killed',
    servers: [],
    async run(ctx) {
      const seg = await segmentFile(ctx);
      const env = { AWS_ACCESS_KEY_ID: 'AKIAFAULTS', AWS_SECRET_ACCESS_KEY: SECRETS[0] as string };
      const r = await cloudTool('barman-cloud-wal-archive', ['--cloud-provider', 'aws-s3', '--endpoint-url', 'http://127.0.0.1:9', '-vv', `s3://${BUCKET}`, SERVER, seg.file], env, { timeoutMs: 180_000 });
      ctx.expect(r.code !== 0 && r.code !== null, `an unreachable store fails archive_command: ${describe(r)}`);
      ctx.expect(/ERROR|error/i.test(r.stderr), `with a message: ${describe(r)}`);
      return `${how(r)}: ${firstLine(r)}`;
    },
  });
  c.push({
    id: 'barman-cloud-wal-archive/missing-file',
    process: 'barman-cloud-wal-archive',
    point: 'WAL_PATH that does not exist',
    kind: 'hostile input',
    servers: [],
    async run(ctx) {
      const st = await store();
      const r = await cloudTool('barman-cloud-wal-archive', [...st.args, st.url(BUCKET), SERVER, '/nonexistent/000000010000000A000000AA'], st.env);
      ctx.expect(r.code !== 0 && /ERROR|error/.test(r.stderr) && !/EXCEPTION/.test(r.stderr), `a clear failure: ${describe(r)}`);
      return `${how(r)}: ${firstLine(r)}`;
    },
  });
  c.push({
    id: 'barman-cloud-wal-archive/twice-same',
    process: 'barman-cloud-wal-archive',
    point: 'the same segment uploaded twice (PostgreSQL retrying after a lost ack)',
    kind: 'race',
    servers: [],
    async run(ctx) {
      const st = await store();
      const seg = await segmentFile(ctx);
      const args = [...st.args, st.url(BUCKET), SERVER, seg.file];
      const [a, b] = await Promise.all([cloudTool('barman-cloud-wal-archive', args, st.env), cloudTool('barman-cloud-wal-archive', args, st.env)]);
      ctx.expect(a.code === 0 || b.code === 0, `one of two concurrent uploads succeeds: ${describe(a)} / ${describe(b)}`);
      await restoresIntact(ctx, st, seg.name, seg.data);
      return `uploads ${how(a)} and ${how(b)}; restored intact`;
    },
  });
  for (const [label, name] of [
    ['traversal', '../../../../etc/passwd'],
    ['absolute', '/etc/passwd'],
    ['shell', '000000010000000A00000001;touch /tmp/faults-pwned'],
  ] as const) {
    c.push({
      id: `barman-cloud-wal-restore/hostile/${label}`,
      process: 'barman-cloud-wal-restore',
      point: `name ${JSON.stringify(name)}`,
      kind: 'hostile input',
      servers: [],
      async run(ctx) {
        const st = await store();
        const dest = path.join(await ctx.world.scratch('cloud-hostile', POSTGRES_USER), 'out');
        const r = await cloudTool('barman-cloud-wal-restore', [...st.args, st.url(BUCKET), SERVER, name, dest], st.env);
        ctx.expect(r.code !== 0, `refused: ${describe(r)}`);
        ctx.expect(!existsSync(dest), 'nothing written');
        ctx.expect(!existsSync('/tmp/faults-pwned'), 'no shell ran the name');
        return `${how(r)}: ${firstLine(r)}`;
      },
    });
  }
  return c;
}
