/**
 * The manual pages are generated from what drives the program (commander definitions of every
 * command, the configuration option table, each executable's own --help): these tests check
 * that nothing is left out (every command, option, configuration option and executable has its
 * entry) and that the commented sample barman.conf is read by the parser without a warning.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../src/config/config.js';
import { GLOBAL_OPTIONS, SERVER_OPTIONS, type OptionDef } from '../../src/config/options.js';
import { COMMANDS } from '../../src/cli/registry.js';
import { generateAll, helpOf, packageBins, PACKAGE_ROOT } from '../../src/cli/man/generate.js';
import { parseHelp } from '../../src/cli/man/help-parse.js';
import { DEBIAN_ACTIVE, fullProgram, optionType, sampleConfig } from '../../src/cli/man/pages.js';
import { esc, helpTextToRoff, roffToText } from '../../src/cli/man/roff.js';

/** The roff of one `.SH`/`.SS` block, from its heading to the next heading of the same or a higher level. */
function block(roff: string, macro: 'SH' | 'SS', title: string): string {
  const lines = roff.split('\n');
  const start = lines.findIndex((l) => l === `.${macro} "${esc(title)}"` || l.startsWith(`.${macro} "${esc(title)} (`));
  assert.ok(start >= 0, `no .${macro} "${title}" in the page`);
  const stop = macro === 'SS' ? /^\.(SS|SH) / : /^\.SH /;
  let end = start + 1;
  while (end < lines.length && !stop.test(lines[end] ?? '')) end++;
  return lines.slice(start, end).join('\n');
}

/**
 * The long flags (or the short one when there is no long one) of a command's options; hidden
 * ones (undocumented Barman aliases, which --help does not show either) excepted.
 */
function flags(cmd: Command): string[] {
  return cmd.options.filter((o) => !o.hidden).map((o) => o.long ?? o.short ?? o.flags);
}

describe('manual pages', () => {
  let pages: Map<string, string>;
  let bins: Record<string, string>;
  before(async () => {
    pages = await generateAll(PACKAGE_ROOT);
    bins = await packageBins(PACKAGE_ROOT);
  });

  it('has barman(1), barman(5) and one page per other executable of package.json bin', () => {
    const expected = ['man/man1/barman.1', 'man/man5/barman.5', ...Object.keys(bins).filter((n) => n !== 'barman').map((n) => `man/man1/${n}.1`), 'barman.conf'];
    assert.deepEqual([...pages.keys()].sort(), expected.sort());
    for (const name of Object.keys(bins)) {
      const page = pages.get(name === 'barman' ? 'man/man1/barman.1' : `man/man1/${name}.1`) ?? '';
      assert.match(page, new RegExp(`^\\.TH "${esc(name.toUpperCase()).replace(/\\/g, '\\\\')}" "1"`, 'm'), name);
      const nameLine = roffToText(block(page, 'SH', 'NAME')).trim();
      assert.match(nameLine, new RegExp(`^NAME\\s+${name} - \\S`), `${name}: NAME line`);
      assert.ok(nameLine.length < 200, `${name}: NAME is one short line, got ${nameLine.length} characters`);
    }
  });

  it("package.json `man` names every page, so that npm install -g links them all", async () => {
    const pkg = JSON.parse(await readFile(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { man?: string[] };
    const generated = [...pages.keys()].filter((k) => k.startsWith('man/')).map((k) => `./dist/share/${k}`);
    assert.deepEqual([...(pkg.man ?? [])].sort(), generated.sort());
  });

  it('barman(1) lists every command of the registry with its aliases, arguments and options', async () => {
    const page = pages.get('man/man1/barman.1') ?? '';
    const program = await fullProgram();
    assert.equal(program.commands.length, COMMANDS.length);
    for (const entry of COMMANDS) {
      const sub = block(page, 'SS', entry.name);
      for (const alias of entry.aliases ?? []) assert.ok(sub.split('\n')[0]?.includes(esc(alias)), `${entry.name}: alias ${alias}`);
      const cmd = program.commands.find((c) => c.name() === entry.name);
      assert.ok(cmd, entry.name);
      const text = roffToText(sub);
      for (const f of flags(cmd)) assert.ok(text.includes(f), `barman ${entry.name}: option ${f} is not in barman(1)`);
      for (const a of cmd.registeredArguments) assert.ok(text.includes(a.name()), `barman ${entry.name}: argument ${a.name()} is not in barman(1)`);
    }
    const options = roffToText(block(page, 'SH', 'OPTIONS'));
    for (const f of flags(program)) assert.ok(options.includes(f), `global option ${f} is not in barman(1)`);
    assert.ok(options.includes('--help'), 'global --help');
  });

  it('barman(5) has every configuration option with its scope, type and default', () => {
    const page = pages.get('man/man5/barman.5') ?? '';
    const options = block(page, 'SH', 'OPTIONS');
    const all = [...(GLOBAL_OPTIONS as readonly OptionDef[]), ...(SERVER_OPTIONS as readonly OptionDef[])];
    assert.ok(all.length > 100, `option table has ${all.length} entries`);
    for (const def of all) {
      const entry = options.split('\n.TP\n').find((e) => e.startsWith(`\\fB${esc(def.name)}\\fR\n`));
      assert.ok(entry, `configuration option ${def.name} is not in barman(5)`);
      const text = roffToText(entry);
      assert.match(text, /Scope: (global only|global|server|model)/, def.name);
      assert.ok(text.includes(`Type: ${optionType(def)}.`), `${def.name}: type`);
      const dflt = def.default === undefined ? 'unset' : def.default === '' ? 'empty' : def.default;
      assert.ok(text.includes(`Default: ${dflt}.`), `${def.name}: default ${dflt}`);
    }
  });

  it("every other executable's page has every argument and option its --help lists", async () => {
    for (const name of Object.keys(bins).filter((n) => n !== 'barman')) {
      const text = roffToText(pages.get(`man/man1/${name}.1`) ?? '');
      assert.ok(text.includes('SYNOPSIS'), name);
      const help = parseHelp(await helpOf(PACKAGE_ROOT, bins[name] ?? ''));
      const terms = help.sections.flatMap((sec) => sec.items.map((i) => i.term));
      if (name !== 'barman-agent') assert.ok(terms.some((t) => t.endsWith('--help')), `${name}: --help parsed from its help`);
      for (const t of terms) assert.ok(text.includes(t), `${name}(1) lacks "${t}" of its --help`);
    }
    const walArchive = roffToText(pages.get('man/man1/barman-wal-archive.1') ?? '');
    for (const f of ['--user', '--port', '--config', '--test', '--help', '--version']) assert.ok(walArchive.includes(f), `barman-wal-archive(1): ${f}`);
    const cloudBackup = roffToText(pages.get('man/man1/barman-cloud-backup.1') ?? '');
    for (const f of ['--cloud-provider', '--endpoint-url', '--snappy', '--gzip']) assert.ok(cloudBackup.includes(f), `barman-cloud-backup(1): ${f}`);
  });

  it('the sample barman.conf is read without a warning and its active settings are the packaged ones', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'man-sample-'));
    try {
      const text = sampleConfig(DEBIAN_ACTIVE).replace('/etc/barman.d', path.join(dir, 'barman.d')).replace('/var/lib/barman', dir);
      const file = path.join(dir, 'barman.conf');
      writeFileSync(file, text);
      // Every commented option, uncommented, is a known option too.
      const uncommented = path.join(dir, 'all.conf');
      writeFileSync(uncommented, text.replace(/^;([a-z_]+ =)/gm, '$1'));
      for (const f of [file, uncommented]) {
        const cfg = loadConfig(f);
        const unknown = cfg.warnings.filter((w) => w.startsWith('Invalid configuration option'));
        assert.deepEqual(unknown, [], f);
      }
      const cfg = loadConfig(file);
      assert.equal(cfg.global.barman_home, dir);
      assert.equal(cfg.global.barman_user, 'barman');
      assert.equal(cfg.global.log_file, '/var/log/barman/barman.log');
      assert.equal(pages.get('barman.conf'), sampleConfig(DEBIAN_ACTIVE));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('help text parsing and roff', () => {
  it('splits a commander --help into usage, description, item sections and notes', () => {
    const h = parseHelp(
      [
        'Usage: tool [options] <source>',
        '',
        'Does a thing. Then more.',
        '',
        'Arguments:',
        '  source             where from',
        '                     (continued)',
        '',
        'Options:',
        '  -n, --dry-run      do nothing',
        '  -h, --help         display help for command',
        '',
        'Exit status: 0 ok.',
        '',
      ].join('\n'),
    );
    assert.equal(h.usage, 'tool [options] <source>');
    assert.equal(h.description, 'Does a thing. Then more.');
    assert.deepEqual(h.sections, [
      { title: 'Arguments', items: [{ term: 'source', text: 'where from (continued)' }] },
      {
        title: 'Options',
        items: [
          { term: '-n, --dry-run', text: 'do nothing' },
          { term: '-h, --help', text: 'display help for command' },
        ],
      },
    ]);
    assert.equal(h.after, 'Exit status: 0 ok.');
  });

  it('accepts a lower-case usage line (argparse style) and text without one', () => {
    assert.equal(parseHelp('usage: agent\n\nThe agent.\n').usage, 'agent');
    assert.equal(parseHelp('usage: agent\n\nThe agent.\n').description, 'The agent.');
    assert.deepEqual(parseHelp('just text'), { usage: '', description: '', sections: [], after: 'just text' });
  });

  it('escapes hyphens, backslashes and leading control characters', () => {
    assert.equal(esc('--x a\\b'), '\\-\\-x a\\eb');
    assert.equal(esc('.TH not a macro\n\'quote'), "\\&.TH not a macro\n\\&'quote");
    assert.equal(roffToText(esc('.a --b c\\d')), '.a --b c\\d');
  });

  it('keeps indented help lines as they are and fills the others', () => {
    assert.deepEqual(helpTextToRoff('Para one\ncontinued.\n\n  barman check all\n  barman list-backups pg\n\nAfter.'), [
      '.PP',
      'Para one',
      'continued.',
      '.RS 2',
      '.nf',
      'barman check all',
      'barman list\\-backups pg',
      '.fi',
      '.RE',
      '.PP',
      'After.',
    ]);
  });
});
