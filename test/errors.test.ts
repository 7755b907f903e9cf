// Keeps docs/errors.md and src/errors.ts in sync: the catalogue lists exactly ERROR_CODES, its
// wire-code table says what the code does, and every code is raised somewhere under src/.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  codeForWire,
  ERROR_CODES,
  ProtocolError,
  REASON_CODES,
  SessionError,
  SluiceError,
  type SluiceErrorCode,
  StreamResetError,
} from '../src/errors.js';
import { ErrorCode } from '../src/protocol/constants.js';
import { plain, tableInSection } from './helpers/markdown.js';

// The compiled test is dist/test/errors.test.js: the repo root is two levels up.
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOC = readFileSync(join(ROOT, 'docs/errors.md'), 'utf8');

// Codes that nothing under src/ raises yet (a code documented ahead of the code that raises it). The
// "used" test fails once one of them is raised, so that the entry is removed with the change that
// raises it: a stale entry would let the code's raiser be deleted later without a word.
const NOT_YET_RAISED: ReadonlySet<SluiceErrorCode> = new Set<SluiceErrorCode>([]);

const CODE_CELL = /^`(SLUICE_ERR_[A-Z_]+)`$/;

describe('docs/errors.md', () => {
  const catalogue = tableInSection(DOC, 'Codes', ['code', 'meaning', 'what to do']);

  test('the repo root was found', () => {
    assert.equal(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).name, 'sluice');
  });

  test('lists exactly the codes of ERROR_CODES, once each', () => {
    const documented = catalogue.rows.map((row) => {
      const match = CODE_CELL.exec(row[0]!);
      assert.ok(match, `not a code cell: ${row[0]}`);
      return match[1]!;
    });
    assert.equal(new Set(documented).size, documented.length, 'a code is documented twice');
    const known = new Set<string>(ERROR_CODES);
    assert.deepEqual(
      documented.filter((code) => !known.has(code)),
      [],
      'documented but not in ERROR_CODES',
    );
    assert.deepEqual(
      ERROR_CODES.filter((code) => !documented.includes(code)),
      [],
      'in ERROR_CODES but not documented',
    );
  });

  test('every code has a meaning and advice', () => {
    for (const row of catalogue.rows) {
      assert.equal(row.length, 3, `${row[0]} row has ${row.length} cells`);
      assert.ok(row[1]!.length > 20 && row[2]!.length > 10, `${row[0]} is not explained`);
    }
  });

  test('the wire code table matches codeForWire and StreamResetError, for every wire code', () => {
    const table = tableInSection(DOC, 'Wire codes', [
      'wire code',
      'name',
      'session ended by GO_AWAY',
      'stream reset by RST',
    ]);
    const seen = new Set<number>();
    for (const row of table.rows) {
      const cell = plain(row[0]!);
      const wire = cell === 'any other' ? 0x42 : Number.parseInt(cell, 16);
      if (cell !== 'any other') {
        assert.equal(ErrorCode[row[1] as keyof typeof ErrorCode], wire, `${row[1]} is not ${cell}`);
        seen.add(wire);
      }
      assert.equal(codeForWire(wire), firstCode(row[2]!), `GO_AWAY ${cell}`);
      assert.equal(new StreamResetError(wire, '', true).code, firstCode(row[3]!), `RST ${cell}`);
    }
    assert.deepEqual([...seen].sort(), Object.values(ErrorCode).sort(), 'every wire code has a row');
  });
});

function firstCode(cell: string): string | undefined {
  return /SLUICE_ERR_[A-Z_]+/.exec(cell)?.[0];
}

/** Every SLUICE_ERR_* string literal in src/**.ts, except the entries of the ERROR_CODES list itself. */
function codesUsedInSource(): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const srcDir = join(ROOT, 'src');
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((file) =>
    file.endsWith('.ts'),
  );
  assert.ok(files.includes('errors.ts'), 'src/errors.ts was not found');
  for (const file of files) {
    let text = readFileSync(join(srcDir, file), 'utf8');
    if (file === 'errors.ts') {
      const list = /export const ERROR_CODES = \[[^\]]*\] as const;/.exec(text);
      assert.ok(list, 'the ERROR_CODES list was not found in src/errors.ts');
      text = text.replace(list[0], '');
    }
    for (const match of text.matchAll(/['"`](SLUICE_ERR_[A-Z_]+)['"`]/g)) {
      used.set(match[1]!, [...(used.get(match[1]!) ?? []), `src/${file}`]);
    }
  }
  return used;
}

describe('every code is raised', () => {
  test('NOT_YET_RAISED names real codes', () => {
    for (const code of NOT_YET_RAISED) assert.ok((ERROR_CODES as readonly string[]).includes(code), code);
  });

  test('each code outside NOT_YET_RAISED appears in src/ beyond the ERROR_CODES list', () => {
    const used = codesUsedInSource();
    const unused = ERROR_CODES.filter((code) => !NOT_YET_RAISED.has(code) && !used.has(code));
    assert.deepEqual(unused, [], 'listed in ERROR_CODES but raised nowhere: raise it or remove it');
  });

  test('no code in NOT_YET_RAISED is raised already (a stale entry fails)', () => {
    const used = codesUsedInSource();
    const stale = [...NOT_YET_RAISED]
      .filter((code) => used.has(code))
      .map((code) => `${code} (in ${[...new Set(used.get(code))].join(', ')})`);
    assert.deepEqual(stale, [], 'raised now: remove these from NOT_YET_RAISED');
  });

  test('no source file names a code that ERROR_CODES lacks', () => {
    const known = new Set<string>(ERROR_CODES);
    const stray = [...codesUsedInSource().keys()].filter((code) => !known.has(code));
    assert.deepEqual(stray, []);
  });
});

describe('error classes', () => {
  test('a ProtocolError defaults to PROTOCOL_ERROR and carries the code it sends', () => {
    const plainError = new ProtocolError('bad frame');
    assert.ok(plainError instanceof SluiceError && plainError instanceof Error);
    assert.equal(plainError.name, 'ProtocolError');
    assert.equal(plainError.wireCode, ErrorCode.PROTOCOL_ERROR);
    assert.equal(plainError.code, 'SLUICE_ERR_PROTOCOL');
    const size = new ProtocolError('too long', ErrorCode.FRAME_SIZE_ERROR);
    assert.equal(size.code, 'SLUICE_ERR_FRAME_SIZE');
    assert.equal(typeof size.wireCode, 'number');
  });

  test('a StreamResetError names who reset, the code and the reason', () => {
    const remote = new StreamResetError(ErrorCode.CANCEL, 'client gone', true);
    assert.equal(remote.message, 'peer reset the stream: CANCEL (client gone)');
    assert.equal(remote.reason, 'client gone');
    assert.equal(remote.wireCode, ErrorCode.CANCEL);
    assert.equal(new StreamResetError(ErrorCode.OVERLOAD, '', false).message, 'stream reset: OVERLOAD');
    assert.equal(new StreamResetError(0x42, '', true).message, 'peer reset the stream: UNKNOWN_0x42');
  });

  test('a ConfigError starts with the key at fault', () => {
    const err = new ConfigError('tunnel.pingInterval', 'must be between 1s and 5m');
    assert.equal(err.message, 'tunnel.pingInterval must be between 1s and 5m');
    assert.equal(err.key, 'tunnel.pingInterval');
    assert.equal(err.code, 'SLUICE_ERR_INVALID_OPTION');
    assert.equal(err.wireCode, undefined);
    assert.equal(
      new ConfigError('controller.url', 'is not a URL', 'SLUICE_ERR_INVALID_URL').code,
      'SLUICE_ERR_INVALID_URL',
    );
  });

  test('a SessionError keeps its cause', () => {
    const cause = new Error('read ECONNRESET');
    const err = new SessionError('SLUICE_ERR_TRANSPORT_CLOSED', 'transport closed', undefined, { cause });
    assert.equal(err.cause, cause);
    assert.equal(err.name, 'SessionError');
  });
});

describe('refusal reason codes', () => {
  const table = tableInSection(DOC, 'Refusal reason codes', ['reason code', 'status', 'when']);

  test('the table lists exactly REASON_CODES, once each, with a status and an explanation', () => {
    const documented = table.rows.map((row) => {
      const match = /^`([a-z_]+)`$/.exec(row[0]!);
      assert.ok(match, `not a reason code cell: ${row[0]}`);
      assert.match(row[1]!, /^[45]\d\d$/, `${row[0]} has no status`);
      assert.ok(row[2]!.length > 20, `${row[0]} is not explained`);
      return match[1]!;
    });
    assert.equal(new Set(documented).size, documented.length, 'a reason code is documented twice');
    assert.deepEqual([...documented].sort(), [...REASON_CODES].sort());
  });

  test('each is used under src/ beyond the list, except the two the edge does not send yet', () => {
    const srcDir = join(ROOT, 'src');
    let text = '';
    for (const file of readdirSync(srcDir, { recursive: true, encoding: 'utf8' })) {
      if (file.endsWith('.ts')) text += readFileSync(join(srcDir, file), 'utf8');
    }
    text = text.replace(/export const REASON_CODES = \[[^\]]*\] as const;/, '');
    // 429 per client and 408 for a stalled body are being added to the edge; drop each once it sends it.
    const pending = new Set(['too_many_requests', 'body_timeout']);
    const unused = REASON_CODES.filter((code) => !pending.has(code) && !text.includes(`'${code}'`));
    assert.deepEqual(unused, [], 'listed in REASON_CODES but sent nowhere');
  });
});
