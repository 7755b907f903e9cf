// The path fence (issue 11, item 14): a request routed under a path prefix must not be readable by its
// target as a path above that prefix. The property tests model lenient targets independently of the
// code under test (decoding once, twice or three times, overlong UTF-8, IIS's %uXXXX, `;` parameters,
// backslashes, NUL, Unicode folding, the WHATWG URL parser) and check that every path the edge accepts
// stays inside the prefix under all of them; and that ordinary paths are never refused.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { pathRefusal } from '../../src/proxy/request-target.js';

const PREFIX = '/api';

describe('pathRefusal: examples', () => {
  test('the escapes the finder used, and their relatives, are refused', () => {
    const cases: [string, RegExp][] = [
      ['/api/../admin', /dot segments/],
      ['/api/./admin', /dot segments/],
      ['/api/..;/admin', /dot segments/],
      ['/api/.;x=1/admin', /dot segments/],
      ['/api/..%3b/admin', /encoded dot segments/],
      ['/api/%2e%2e/admin', /encoded dot segments/],
      ['/api/%252e%252e/admin', /encoded dot segments/],
      ['/api/%25252e%25252e/admin', /encoded dot segments/],
      ['/api/%c0%ae%c0%ae/admin', /not valid UTF-8/],
      ['/api/%e0%80%ae./admin', /not valid UTF-8/],
      ['/api/%f0%80%80%ae%f0%80%80%ae/admin', /not valid UTF-8/],
      ['/api/%25c0%25ae%25c0%25ae/admin', /encoded dot segments/],
      ['/api/%u002e%u002e/admin', /% that does not start/],
      ['/api/%25u002e%25u002e/admin', /encoded dot segments/],
      ['/api/..%00/admin', /NUL/],
      ['/api/x%2500', /NUL/],
      ['/api/%ef%bc%8e%ef%bc%8e/admin', /encoded dot segments/],
      ['/api/..\\admin', /dot segments/],
      ['/api/..%5cadmin', /encoded dot segments/],
      ['/api/..%255cadmin', /encoded dot segments/],
      ['/api/..%20/admin', /encoded dot segments/],
      ['/api/.../admin', /dot segments/],
      ['/api/..%3f/admin', /encoded dot segments/],
      ['/api/..#/admin', /fragment/],
      ['/api/%zz', /% that does not start/],
      ['/api/%4', /% that does not start/],
      ['/api/%ff', /not valid UTF-8/],
      ['/api/%ed%a0%80', /not valid UTF-8/],
    ];
    for (const [path, reason] of cases) assert.match(pathRefusal(path) ?? 'accepted', reason, path);
  });

  test('ordinary paths are accepted, whatever the query holds', () => {
    for (const path of [
      '/',
      '*',
      '/api/v1/items',
      '/app.js',
      '/api/.well-known/openid',
      '/api/a;jsessionid=1/b',
      '/api/%c3%a4%e2%82%ac%f0%9f%98%80',
      '/api/a%2Fb',
      '/api/%2541',
      '/api/100%25',
      '/api/x.',
      '/api/..x',
      '/api/x?q=../../etc&r=%00&s=%zz',
    ]) {
      assert.equal(pathRefusal(path), undefined, path);
    }
  });
});

// --- A lenient target, written apart from the code under test ---------------------------------------

/** One lenient percent-decoding: %XX, and IIS's %uXXXX; a stray % stays. Returns bytes. */
function decodeOnce(text: string): number[] {
  const bytes: number[] = [];
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    const pair = /^%([0-9a-f]{2})/i.exec(rest);
    const wide = /^%u([0-9a-f]{4})/i.exec(rest);
    if (pair !== null) {
      bytes.push(Number.parseInt(pair[1]!, 16));
      i += 3;
    } else if (wide !== null) {
      bytes.push(...Buffer.from(String.fromCharCode(Number.parseInt(wide[1]!, 16)), 'utf8'));
      i += 6;
    } else {
      bytes.push(...Buffer.from(text[i]!, 'utf8'));
      i += 1;
    }
  }
  return bytes;
}

/** UTF-8 the way an old, lenient decoder reads it: overlong forms are the character they spell. */
function overlongUtf8(bytes: number[]): string {
  let text = '';
  for (let i = 0; i < bytes.length;) {
    const lead = bytes[i]!;
    const size = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    const tail = bytes.slice(i + 1, i + size);
    if (size === 1 || tail.length !== size - 1 || tail.some((b) => b >> 6 !== 2)) {
      text += lead < 0x80 ? String.fromCharCode(lead) : '\ufffd';
      i += 1;
      continue;
    }
    const value = tail.reduce((v, b) => v * 64 + (b & 63), lead & [0, 0, 31, 15, 7][size]!);
    text += value <= 0x10ffff ? String.fromCodePoint(value) : '\ufffd';
    i += size;
  }
  return text;
}

interface Reading {
  cutAtNul: boolean;
  backslash: boolean;
  params: boolean;
  fold: boolean;
  windows: boolean;
  queryAfterDecoding: boolean;
}

const READINGS: Reading[] = [];
for (let bits = 0; bits < 64; bits++) {
  READINGS.push({
    cutAtNul: (bits & 1) !== 0,
    backslash: (bits & 2) !== 0,
    params: (bits & 4) !== 0,
    fold: (bits & 8) !== 0,
    windows: (bits & 16) !== 0,
    queryAfterDecoding: (bits & 32) !== 0,
  });
}

/** The segments a target serves for `decoded` under `reading`, dot segments resolved (RFC 3986 §5.2.4);
 *  null when `..` walked above the root. */
function resolve(decoded: string, reading: Reading): string[] | null {
  let path = decoded;
  if (reading.cutAtNul && path.includes('\0')) path = path.slice(0, path.indexOf('\0'));
  if (reading.queryAfterDecoding) path = path.split(/[?#]/, 1)[0]!;
  if (reading.backslash) path = path.replaceAll('\\', '/');
  if (reading.fold) path = path.normalize('NFKC');
  const out: string[] = [];
  for (let segment of path.split('/')) {
    if (reading.params) segment = segment.split(';', 1)[0]!;
    if (reading.windows) segment = segment.replace(/ +$/, '').replace(/^\.{3,}$/, '..');
    if (segment === '.') continue;
    if (segment === '..') {
      if (out.length === 0) return null;
      out.pop();
      continue;
    }
    out.push(segment);
  }
  return out;
}

/** Every path some lenient target could serve for `raw`, as segment lists (null: above the root). */
function readings(raw: string): (string[] | null)[] {
  const path = raw.split('?', 1)[0]!;
  const decoded = [path];
  for (let times = 1; times <= 3; times++) decoded.push(overlongUtf8(decodeOnce(decoded.at(-1)!)));
  const all: (string[] | null)[] = [];
  for (const text of decoded) for (const reading of READINGS) all.push(resolve(text, reading));
  // The WHATWG parser resolves %2e dot segments and backslashes itself; then a decoding on top.
  const whatwg = new URL(raw, 'http://target.test').pathname;
  all.push(resolve(overlongUtf8(decodeOnce(whatwg)), READINGS[0]!));
  return all;
}

function insidePrefix(segments: string[] | null): boolean {
  // Resolved from "/api/...": out[0] is '' (the leading slash), out[1] must still be "api".
  return segments !== null && segments[0] === '' && segments[1] === PREFIX.slice(1);
}

const PIECES = [
  'a',
  'admin',
  '.',
  '..',
  '...',
  '%2e',
  '%2E',
  '%252e',
  '%25252e',
  '%c0%ae',
  '%C0%AE',
  '%e0%80%ae',
  '%f0%80%80%ae',
  '%25c0%25ae',
  '%c0%2e',
  '%u002e',
  '%25u002e',
  '%ef%bc%8e',
  '%e2%80%a4',
  ';',
  ';x=1',
  '%3b',
  '%253b',
  '%00',
  '%2500',
  '\\',
  '%5c',
  '%255c',
  '/',
  '%2f',
  '%252f',
  '%20',
  '%3f',
  '%23',
  '#',
  '%',
  '%25',
  '%c3%a4',
  '%ff',
];

const escapeAttempt = fc
  .array(fc.constantFrom(...PIECES), { minLength: 1, maxLength: 10 })
  .map((pieces) => `${PREFIX}/${pieces.join('')}`);

describe('pathRefusal: properties', () => {
  test('a path the edge accepts never leaves its prefix, however a lenient target reads it', () => {
    fc.assert(
      fc.property(escapeAttempt, (path) => {
        if (pathRefusal(path) !== undefined) return true;
        const outside = readings(path).find((segments) => !insidePrefix(segments));
        assert.equal(outside, undefined, `accepted ${path}, read as ${JSON.stringify(outside)}`);
        return true;
      }),
      { numRuns: 5_000 },
    );
  });

  test('the escapes found by hand are among what the generator makes, and all are refused', () => {
    // The model is not vacuous: these leave the prefix under some reading.
    for (const path of [
      '/api/..;/admin',
      '/api/%252e%252e/admin',
      '/api/%c0%ae%c0%ae/admin',
      '/api/..%00/admin',
    ]) {
      assert.ok(
        readings(path).some((segments) => !insidePrefix(segments)),
        path,
      );
      assert.notEqual(pathRefusal(path), undefined, path);
    }
  });

  test('paths of ordinary segments are never refused', () => {
    const segment = fc
      .array(
        fc.constantFrom(
          'a',
          'Z9',
          'x.y',
          '.well',
          '-',
          '_',
          '~',
          '%41',
          '%20x',
          '%c3%a4',
          '%e2%82%ac',
          '%2541',
          '!',
        ),
        { minLength: 1, maxLength: 4 },
      )
      .map((parts) => parts.join(''));
    const withParams = fc
      .tuple(segment, fc.option(fc.constantFrom(';v=1', ';jsessionid=AB')))
      .map(([s, p]) => s + (p ?? ''));
    fc.assert(
      fc.property(fc.array(withParams, { minLength: 1, maxLength: 6 }), (segments) => {
        const path = `/${segments.join('/')}`;
        assert.equal(pathRefusal(path), undefined, path);
        return true;
      }),
      { numRuns: 2_000 },
    );
  });
});
