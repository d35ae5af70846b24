/**
 * The `--help` output of an executable (commander's layout) split into its parts, so that a
 * manual page can be made of it: every executable in package.json `bin` gets its page from
 * what it prints, whoever wrote it and whatever it parses its arguments with.
 *
 *   Usage: NAME [options] <ARG>
 *
 *   Description, one or more paragraphs.
 *
 *   Arguments:
 *     ARG             text
 *                     continued
 *
 *   Options:
 *     -x, --long <v>  text
 *
 *   Free text (the "after" help: notes, examples).
 */

export interface HelpItem {
  term: string;
  text: string;
}

export interface HelpSection {
  title: string;
  items: HelpItem[];
}

export interface ParsedHelp {
  usage: string;
  description: string;
  sections: HelpSection[];
  after: string;
}

/** Section titles commander prints; any other `Title:` line belongs to the free text. */
const ITEM_SECTIONS = /^(Arguments|Options|Global Options|Commands):$/;

export function parseHelp(text: string): ParsedHelp {
  const lines = text.replace(/\r/g, '').split('\n');
  let i = 0;
  while (i < lines.length && (lines[i] ?? '').trim() === '') i++;
  const usageLine = lines[i] ?? '';
  const m = /^usage:\s*(.*)$/i.exec(usageLine);
  if (!m) return { usage: '', description: '', sections: [], after: text.trim() };
  const usage = m[1] ?? '';
  i++;

  const description: string[] = [];
  for (; i < lines.length && !ITEM_SECTIONS.test(lines[i] ?? ''); i++) description.push(lines[i] ?? '');

  const sections: HelpSection[] = [];
  while (i < lines.length && ITEM_SECTIONS.test(lines[i] ?? '')) {
    const section: HelpSection = { title: (lines[i] ?? '').slice(0, -1), items: [] };
    sections.push(section);
    i++;
    for (; i < lines.length && (lines[i] ?? '').trim() !== ''; i++) {
      const line = lines[i] ?? '';
      const item = /^ {2}(\S(?:.*?\S)?)(?: {2,}(\S.*))?$/.exec(line);
      const last = section.items[section.items.length - 1];
      if (item && !/^ {3}/.test(line)) {
        section.items.push({ term: item[1] ?? '', text: item[2] ?? '' });
      } else if (last) {
        last.text = `${last.text} ${line.trim()}`.trim();
      }
    }
    while (i < lines.length && (lines[i] ?? '').trim() === '') i++;
  }
  return {
    usage,
    description: description.join('\n').trim(),
    sections,
    after: lines.slice(i).join('\n').trim(),
  };
}
