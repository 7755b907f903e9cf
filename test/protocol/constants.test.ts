// Pins every number of src/protocol/constants.ts, the way hashicorp/yamux's const_test does: each of
// them is on the wire, so changing one must fail a test. The spec tables are also read here, so
// docs/protocol.md and the constants cannot drift apart.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  Defaults,
  ErrorCode,
  errorCodeName,
  Flag,
  FrameType,
  HEADER_SIZE,
  Limits,
  PROTOCOL_VERSION,
} from '../../src/protocol/constants.js';
import {
  MAX_REPLY_BYTES,
  MAX_SNAPSHOT_BYTES,
  MAX_SNAPSHOT_ROUTES,
} from '../../src/protocol/route-snapshot.js';
import { plain, tableInSection } from '../helpers/markdown.js';

// The compiled test is dist/test/protocol/constants.test.js: the repo root is three levels up.
const SPEC = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

const KiB = 1024;
const MiB = 1024 * 1024;

describe('constants pin the wire', () => {
  test('version and header size', () => {
    assert.equal(PROTOCOL_VERSION, 1);
    assert.equal(HEADER_SIZE, 12);
  });

  test('frame types', () => {
    assert.deepEqual(FrameType, {
      DATA: 0x0,
      WINDOW_UPDATE: 0x1,
      PING: 0x2,
      GO_AWAY: 0x3,
      SYN: 0x4,
      ACK: 0x5,
      RST: 0x6,
      HELLO: 0x7,
      WELCOME: 0x8,
    });
  });

  test('flags', () => {
    assert.deepEqual(Flag, { FIN: 0x1, ACK: 0x2 });
  });

  test('error codes', () => {
    assert.deepEqual(ErrorCode, {
      NO_ERROR: 0x00,
      PROTOCOL_ERROR: 0x01,
      INTERNAL_ERROR: 0x02,
      FLOW_CONTROL_ERROR: 0x03,
      FRAME_SIZE_ERROR: 0x04,
      REFUSED_STREAM: 0x05,
      CANCEL: 0x06,
      OVERLOAD: 0x07,
      PING_TIMEOUT: 0x08,
      WRITE_TIMEOUT: 0x09,
      HANDSHAKE_TIMEOUT: 0x0a,
      UNAUTHORIZED: 0x0b,
      FORBIDDEN: 0x0c,
      VERSION_MISMATCH: 0x0d,
      TARGET_DENIED: 0x10,
      TARGET_UNREACHABLE: 0x11,
      TARGET_TIMEOUT: 0x12,
      TARGET_TLS: 0x13,
    });
  });

  test('limits', () => {
    assert.deepEqual(Limits, {
      MAX_DATA_PAYLOAD: 16_777_216,
      MAX_SYN_PAYLOAD: 65_536,
      MAX_HANDSHAKE_PAYLOAD: 16_384,
      MAX_REASON_BYTES: 1_024,
      MIN_WINDOW: 65_536,
      MAX_WINDOW: 2_147_483_647,
      MAX_STREAM_ID: 4_294_967_295,
      WINDOW_UPDATE_PAYLOAD: 4,
      PING_PAYLOAD: 8,
      MAX_ACK_DELAY_MS: 10,
    });
  });

  test('defaults', () => {
    assert.deepEqual(Defaults, {
      WINDOW: 4_194_304,
      MAX_FRAME_DATA: 65_536,
      MAX_STREAMS: 65_536,
      MAX_PENDING_OPENS: 4_096,
      SESSION_BUFFER: 268_435_456,
      PING_INTERVAL_MS: 15_000,
      PING_TIMEOUT_MS: 45_000,
      WRITE_TIMEOUT_MS: 45_000,
      HANDSHAKE_TIMEOUT_MS: 10_000,
      OPEN_TIMEOUT_MS: 10_000,
      GRACE_PERIOD_MS: 30_000,
    });
  });

  test('values are distinct within each set, so a frame prints without its type', () => {
    for (const set of [FrameType, Flag, ErrorCode]) {
      const values = Object.values(set);
      assert.equal(new Set(values).size, values.length);
    }
  });

  test('errorCodeName names every code and numbers unknown ones', () => {
    for (const [name, code] of Object.entries(ErrorCode)) assert.equal(errorCodeName(code), name);
    assert.equal(errorCodeName(0x0e), 'UNKNOWN_0xe');
    assert.equal(errorCodeName(0xdeadbeef), 'UNKNOWN_0xdeadbeef');
  });
});

/** Name → number from a spec table, failing on a duplicate name or number. */
function namedNumbers(rows: readonly (readonly string[])[], nameColumn: number, numberColumn: number) {
  const byName = new Map<string, number>();
  for (const row of rows) {
    const name = plain(row[nameColumn]!);
    const number = Number.parseInt(plain(row[numberColumn]!), 16);
    assert.ok(/^0x[0-9A-Fa-f]+$/.test(plain(row[numberColumn]!)), `not a hex number: ${row[numberColumn]}`);
    assert.ok(!byName.has(name), `${name} appears twice`);
    assert.ok(![...byName.values()].includes(number), `0x${number.toString(16)} appears twice`);
    byName.set(name, number);
  }
  return byName;
}

describe('docs/protocol.md agrees with the constants', () => {
  test('§3 frame types: the same names and numbers, both ways', () => {
    const table = tableInSection(SPEC, '3. Frame types', ['type', 'name', 'stream id', 'flags', 'payload']);
    const documented = namedNumbers(table.rows, 1, 0);
    assert.deepEqual(Object.fromEntries(documented), { ...FrameType });
  });

  test('§3 flags: each flag named in the table has its value, and every flag is named', () => {
    const table = tableInSection(SPEC, '3. Frame types', ['type', 'name', 'stream id', 'flags', 'payload']);
    const documented = new Map<string, number>();
    for (const row of table.rows) {
      const cell = plain(row[3]!);
      if (cell === 'none') continue;
      for (const match of cell.matchAll(/([A-Z_]+) \((0x[0-9a-fA-F]+)\)/g)) {
        documented.set(match[1]!, Number.parseInt(match[2]!, 16));
      }
    }
    assert.deepEqual(Object.fromEntries(documented), { ...Flag });
  });

  test('§8 error codes: the same names and numbers, both ways', () => {
    const table = tableInSection(SPEC, '8. Error codes', ['code', 'name', 'meaning']);
    const documented = namedNumbers(table.rows, 1, 0);
    assert.deepEqual(Object.fromEntries(documented), { ...ErrorCode });
  });

  test('§2 header size and version', () => {
    assert.match(SPEC, new RegExp(`fixed ${HEADER_SIZE}-byte header`));
    assert.match(SPEC, new RegExp(`\\*\\*version\\*\\* \\(8 bits\\): \`${PROTOCOL_VERSION}\``));
  });

  test('§10 limits: every row has the value of its constants, and no row is unchecked', () => {
    const expected: Record<string, readonly number[]> = {
      'header size': [HEADER_SIZE],
      'DATA payload': [Limits.MAX_DATA_PAYLOAD, Defaults.MAX_FRAME_DATA],
      'SYN payload': [Limits.MAX_SYN_PAYLOAD],
      'HELLO / WELCOME payload': [Limits.MAX_HANDSHAKE_PAYLOAD],
      'GO_AWAY / RST reason': [Limits.MAX_REASON_BYTES],
      'initial window': [Limits.MIN_WINDOW, Limits.MAX_WINDOW, Defaults.WINDOW],
      'streams per session': [Defaults.MAX_STREAMS],
      'pending opens': [Defaults.MAX_PENDING_OPENS],
      'session unread bytes': [Defaults.SESSION_BUFFER],
      'ping interval / timeout': [Defaults.PING_INTERVAL_MS, Defaults.PING_TIMEOUT_MS],
      'handshake timeout': [Defaults.HANDSHAKE_TIMEOUT_MS],
      'open timeout': [Defaults.OPEN_TIMEOUT_MS],
      "ACK held back for the stream's first frame": [Limits.MAX_ACK_DELAY_MS],
      'drain grace period': [Defaults.GRACE_PERIOD_MS],
      'route snapshot (§12)': [MAX_SNAPSHOT_ROUTES, MAX_SNAPSHOT_BYTES, MAX_REPLY_BYTES],
    };
    const table = tableInSection(SPEC, '10. Limits', ['what', 'value']);
    const documented = Object.fromEntries(table.rows.map((row) => [row[0]!, quantities(row[1]!)]));
    assert.deepEqual(documented, expected);
  });

  test('the quantity reader understands the units the spec uses', () => {
    assert.deepEqual(quantities('64 KiB to `2^31 - 1`, default 4 MiB'), [64 * KiB, 2 ** 31 - 1, 4 * MiB]);
    assert.deepEqual(quantities('65,536 open at once by default (`OVERLOAD` above)'), [65_536]);
    assert.deepEqual(quantities('15 s / 45 s by default'), [15_000, 45_000]);
  });
});

/** The numbers in a §10 value cell, in order: sizes in bytes, durations in milliseconds. */
function quantities(cell: string): number[] {
  const found: number[] = [];
  const pattern = /`2\^(\d+) - 1`|(\d[\d,]*)(?:\s*(KiB|MiB|bytes|s)\b)?/g;
  for (const match of cell.matchAll(pattern)) {
    if (match[1] !== undefined) {
      found.push(2 ** Number(match[1]) - 1);
      continue;
    }
    const value = Number(match[2]!.replaceAll(',', ''));
    const scale = { KiB, MiB, bytes: 1, s: 1000 }[match[3] ?? 'bytes'] ?? 1;
    found.push(value * scale);
  }
  return found;
}
