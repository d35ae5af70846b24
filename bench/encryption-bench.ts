/**
 * encryption = gpg (`npm run bench -- --encryption-only`): archiving and serving encrypted WAL
 * beside the floor, the same work done by the tools alone in a shell loop, in the same run:
 *   - `archive-wal` of N 16 MiB segments, compression gzip + encryption gpg, vs
 *     `gzip -1 | gpg --encrypt` per file (what the work costs without barman-ts);
 *   - `get-wal` of each of them vs `gpg --decrypt | gunzip` per file.
 * A key is generated for the run in a temporary GNUPGHOME (ed25519/cv25519).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run } from '../src/util/proc.js';
import { BARMAN_SCRIPT } from '../src/util/self.js';
import { walName } from '../src/wal/names.js';

const SEG = 16 * 1024 * 1024;
const N = Number(process.env.BENCH_ENC_SEGMENTS ?? 16);

/** WAL-like content: page headers, some text, zeros (compresses about as real WAL does). */
function segment(seed: number): Buffer {
  const b = Buffer.alloc(SEG);
  for (let page = 0; page < SEG; page += 8192) {
    b.writeUInt16LE(0xd110, page);
    b.writeUInt32LE(seed, page + 4);
    if ((page / 8192) % 3 === 0) continue;
    b.write(`INSERT INTO pgbench_history VALUES (${seed}, ${page}, ${page * 7 % 1000}, now());`.repeat(40), page + 24, 'latin1');
  }
  return b;
}

async function must(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<string> {
  const r = await run(cmd, args, { env, input });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

export async function encryptionBench(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'benc-'));
  const gnupg = path.join(root, 'g');
  fs.mkdirSync(gnupg, { mode: 0o700 });
  const env: NodeJS.ProcessEnv = { ...process.env, GNUPGHOME: gnupg };
  try {
    await must('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', 'bench', '--quick-gen-key', 'bench <b@example.invalid>', 'future-default', 'default', 'never'], env);
    const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(await must('gpg', ['--batch', '--with-colons', '--list-keys'], env))?.[1] ?? '';
    fs.writeFileSync(path.join(root, 'pass'), 'bench\n');
    const home = path.join(root, 'home');
    const incoming = path.join(home, 'enc', 'incoming');
    fs.mkdirSync(incoming, { recursive: true });
    const conf = path.join(root, 'barman.conf');
    fs.writeFileSync(
      conf,
      `[barman]\nbarman_home = ${home}\nbarman_user = ${os.userInfo().username}\n\n[enc]\nconninfo = host=127.0.0.1 port=1\nbackup_method = postgres\narchiver = on\n` +
        `compression = gzip\ncompression_level = low\nbackup_compression = gzip\nencryption = gpg\nencryption_key_id = ${fpr}\nencryption_passphrase_command = cat ${root}/pass\n`,
    );
    const src = path.join(root, 'src');
    fs.mkdirSync(src);
    const names = Array.from({ length: N }, (_, i) => walName(1, 0, i + 1));
    names.forEach((n, i) => fs.writeFileSync(path.join(src, n), segment(i)));
    const mb = (N * SEG) / (1024 * 1024);
    console.log(`encryption = gpg: ${N} segments (${mb} MiB), ${os.cpus().length} CPUs`);

    // Floor: the same compression and encryption by the tools, one file after the other.
    const floorDir = path.join(root, 'floor');
    fs.mkdirSync(floorDir);
    const enc = `for f in ${src}/*; do gzip -1 -c "$f" | gpg --batch --yes --trust-model always -e -r ${fpr} --compress-algo none -o ${floorDir}/$(basename "$f"); done`;
    const tFloor = await timed(() => must('/bin/sh', ['-c', enc], env));
    for (const n of names) fs.copyFileSync(path.join(src, n), path.join(incoming, n));
    const tArchive = await timed(() => must(process.execPath, [BARMAN_SCRIPT, '-c', conf, '-q', 'archive-wal', 'enc'], env));
    console.log(`  archive-wal (gzip + gpg)          ${tArchive.toFixed(2)} s  ${(mb / tArchive).toFixed(0)} MiB/s`);
    console.log(`  floor: gzip -1 | gpg -e per file  ${tFloor.toFixed(2)} s  ${(mb / tFloor).toFixed(0)} MiB/s`);

    const out = path.join(root, 'out');
    fs.mkdirSync(out);
    const tGet = await timed(async () => {
      for (const n of names) await must(process.execPath, [BARMAN_SCRIPT, '-c', conf, 'get-wal', '-o', out, 'enc', n], env);
    });
    const dec = `for f in ${floorDir}/*; do gpg --batch --pinentry-mode loopback --passphrase-file ${root}/pass -d "$f" 2>/dev/null | gunzip > ${out}/$(basename "$f").floor; done`;
    const tDec = await timed(() => must('/bin/sh', ['-c', dec], env));
    for (const n of names) {
      if (!fs.readFileSync(path.join(out, n)).equals(fs.readFileSync(path.join(src, n)))) throw new Error(`get-wal returned wrong content for ${n}`);
    }
    console.log(`  get-wal, one call per file         ${tGet.toFixed(2)} s  ${(mb / tGet).toFixed(0)} MiB/s`);
    console.log(`  floor: gpg -d | gunzip per file    ${tDec.toFixed(2)} s  ${(mb / tDec).toFixed(0)} MiB/s`);
  } finally {
    await run('gpgconf', ['--kill', 'all'], { env }).catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
}
