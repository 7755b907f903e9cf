// The manual's links hold: every relative link in README.md and docs/*.md reaches a file (and its
// anchor a heading of that file), every page of docs/ is linked from the README, and every `src/` path
// docs/internals.md names exists.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOCS = readdirSync(join(ROOT, 'docs'))
  .filter((name) => name.endsWith('.md'))
  .sort();
const PAGES = ['README.md', ...DOCS.map((name) => `docs/${name}`)];

function read(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8');
}

/** The text outside fenced code blocks, where a `#` line is a comment and `](` no link. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, '');
}

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor the headings of `markdown` give, repeats numbered as GitHub numbers them. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const match of prose(markdown).matchAll(/^#{1,6}\s+(.*?)\s*#*$/gm)) {
    const base = slug(match[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    result.add(n === 0 ? base : `${base}-${n}`);
  }
  return result;
}

/** The targets of the inline links and images of `markdown`. */
function links(markdown: string): string[] {
  return [...prose(markdown).matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!);
}

describe('links in README.md and docs/*.md', () => {
  for (const page of PAGES) {
    test(`${page}: every relative link reaches a file and a heading`, () => {
      const relativeLinks = links(read(page)).filter((link) => !/^[a-z][a-z0-9+.-]*:/i.test(link));
      for (const link of relativeLinks) {
        const [path, anchor] = link.split('#', 2) as [string, string | undefined];
        const target = path === '' ? page : relative(ROOT, join(ROOT, dirname(page), path));
        assert.ok(!target.startsWith('..'), `${page}: ${link} leaves the repository`);
        assert.ok(existsSync(join(ROOT, target)), `${page}: ${link} names no file (${target})`);
        if (anchor !== undefined && anchor !== '') {
          assert.ok(
            target.endsWith('.md'),
            `${page}: ${link} has an anchor into a file that is not Markdown`,
          );
          assert.ok(
            anchors(read(target)).has(anchor),
            `${page}: ${link}: ${target} has no heading #${anchor}`,
          );
        }
      }
    });
  }

  test('the README links to every page of docs/', () => {
    const linked = new Set(links(read('README.md')).map((link) => link.split('#', 1)[0]));
    for (const name of DOCS) assert.ok(linked.has(`docs/${name}`), `README.md links to docs/${name}`);
  });

  test('the README links to no file outside the repository', () => {
    for (const link of links(read('README.md'))) {
      assert.ok(!link.startsWith('..') && !link.startsWith('/'), `README.md links outside: ${link}`);
    }
  });
});

describe('docs/internals.md', () => {
  const text = read('docs/internals.md');

  test('every src/ path it names exists', () => {
    const paths = [...text.matchAll(/(?<![\w./-])src\/[\w./-]*\w/g)].map((m) => m[0]);
    assert.ok(paths.length >= 30, `src/ paths found: ${paths.length}`);
    for (const path of new Set(paths)) assert.ok(existsSync(join(ROOT, path)), `${path} exists`);
  });

  test('it defines the vocabulary the code and the other pages use', () => {
    const headings = new Set(
      [...prose(text).matchAll(/^### (.*)$/gm)].flatMap((m) => m[1]!.toLowerCase().split(' and ')),
    );
    const words = ['controller', 'agent', 'cluster', 'tunnel', 'session', 'stream', 'route', 'target'];
    words.push('edge', 'exchange', 'envelope', 'record', 'delivery', 'slot', 'generation');
    words.push('control plane', 'seed', 'source');
    for (const word of words) assert.ok(headings.has(word), `a "### ${word}" heading`);
  });
});
