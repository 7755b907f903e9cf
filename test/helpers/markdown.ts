// Reads the tables of one section of a Markdown document, so tests can hold docs/*.md and the code
// to the same facts. Only the GitHub table syntax our docs use is understood.

export interface MarkdownTable {
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

const HEADING = /^(#+)\s+(.*)$/;
const SEPARATOR = /^\|(\s*:?-+:?\s*\|)+\s*$/;

/** The tables under the first heading whose text starts with `heading`, up to the next heading of its level or above. */
export function tablesInSection(markdown: string, heading: string): MarkdownTable[] {
  // Fenced code is blanked first: a `# comment` line in a YAML or shell example is not a heading.
  let fenced = false;
  const lines = markdown.split(/\r?\n/).map((line) => {
    const fence = line.startsWith('```');
    if (fence) fenced = !fenced;
    return fence || fenced ? '' : line;
  });
  const start = lines.findIndex((line) => HEADING.exec(line)?.[2]?.startsWith(heading) === true);
  if (start === -1) throw new Error(`no heading starting with "${heading}"`);
  const level = HEADING.exec(lines[start]!)![1]!.length;
  const tables: MarkdownTable[] = [];
  let current: string[][] | null = null;
  for (const line of lines.slice(start + 1)) {
    const sub = HEADING.exec(line);
    if (sub !== null && sub[1]!.length <= level) break;
    if (!line.startsWith('|')) {
      current = null;
      continue;
    }
    if (SEPARATOR.test(line)) continue;
    if (current === null) {
      current = [];
      tables.push({ header: splitRow(line), rows: current });
      continue;
    }
    current.push(splitRow(line));
  }
  return tables;
}

/** The one table of a section, checked to have exactly the given header. */
export function tableInSection(markdown: string, heading: string, header: readonly string[]): MarkdownTable {
  const matching = tablesInSection(markdown, heading).filter(
    (table) => table.header.join('|') === header.join('|'),
  );
  if (matching.length !== 1) {
    throw new Error(
      `expected one table | ${header.join(' | ')} | under "${heading}", found ${matching.length}`,
    );
  }
  return matching[0]!;
}

function splitRow(line: string): string[] {
  const inner = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

/** The text of a cell without the backticks of inline code: "`0x0`" → "0x0". */
export function plain(cell: string): string {
  return cell.replace(/`/g, '').trim();
}
