/**
 * `node dist/src/cli/man/generate.js OUTDIR`: writes OUTDIR/man/man1/*.1, OUTDIR/man/man5/barman.5
 * and OUTDIR/barman.conf (commented sample). The executables come from package.json `bin`:
 * `barman` gets barman(1), every other one a page made from its `--help` output. Run by the
 * npm prepack step and by the Debian package build.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../util/proc.js';
import { DEBIAN_ACTIVE, barmanPage, clientPage, configPage, sampleConfig, type PageContext } from './pages.js';

/** dist/src/cli/man → the package root (where package.json and bin/ are). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

/** package.json `bin`: executable name → path relative to the package root. */
export async function packageBins(root = PACKAGE_ROOT): Promise<Record<string, string>> {
  const pkg = JSON.parse(await fsp.readFile(path.join(root, 'package.json'), 'utf8')) as { bin?: Record<string, string> | string };
  if (!pkg.bin || typeof pkg.bin === 'string') throw new Error('package.json has no bin map');
  return pkg.bin;
}

/**
 * What `NAME --help` prints (it must exit 0). On stdout, or on stderr for a program whose stdout
 * is a protocol channel (barman-agent).
 */
export async function helpOf(root: string, binPath: string): Promise<string> {
  const file = path.join(root, binPath);
  const res = await run(file, ['--help'], { env: { ...process.env, COLUMNS: '80', NO_COLOR: '1' }, timeoutMs: 60_000 });
  const text = res.stdout.trim() !== '' ? res.stdout : res.stderr;
  if (res.code !== 0 || text.trim() === '') {
    throw new Error(`${binPath} --help exited ${res.code}${res.stderr ? `: ${res.stderr.trim().split('\n')[0]}` : ' and printed nothing'}`);
  }
  return text;
}

/** Every page and the sample configuration, as relative path → content. */
export async function generateAll(root = PACKAGE_ROOT, date = ''): Promise<Map<string, string>> {
  const bins = await packageBins(root);
  const clients = Object.keys(bins).filter((n) => n !== 'barman').sort();
  const ctx: PageContext = { clients, date };
  const files = new Map<string, string>();
  files.set('man/man1/barman.1', await barmanPage(ctx));
  files.set('man/man5/barman.5', configPage(ctx));
  for (const name of clients) {
    files.set(`man/man1/${name}.1`, clientPage(name, await helpOf(root, bins[name] ?? ''), ctx));
  }
  files.set('barman.conf', sampleConfig(DEBIAN_ACTIVE));
  return files;
}

async function main(): Promise<void> {
  const out = process.argv[2];
  if (!out) throw new Error('usage: generate.js OUTDIR');
  const files = await generateAll(PACKAGE_ROOT, process.env.SOURCE_DATE_EPOCH ? new Date(Number(process.env.SOURCE_DATE_EPOCH) * 1000).toISOString().slice(0, 10) : '');
  // Written into a new directory that replaces the old one: no page of a removed executable stays.
  const tmp = `${out}.tmp-${process.pid}`;
  await fsp.rm(tmp, { recursive: true, force: true });
  for (const [rel, content] of files) {
    await fsp.mkdir(path.dirname(path.join(tmp, rel)), { recursive: true });
    await fsp.writeFile(path.join(tmp, rel), content, { mode: 0o644 });
  }
  await fsp.rm(out, { recursive: true, force: true });
  await fsp.rename(tmp, out);
  process.stdout.write(`${[...files.keys()].map((f) => path.join(out, f)).join('\n')}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`ERROR: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
