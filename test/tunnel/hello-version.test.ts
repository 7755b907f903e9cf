// The optional `version` field of HELLO (docs/protocol.md §4): the client sends it when it has one, the
// server keeps it on the peer, and a HELLO without it (an older agent) or with a malformed one still
// opens the session, since the field is informational.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeJsonObject, encodeJsonFrame } from '../../src/protocol/codec.js';
import { FrameType } from '../../src/protocol/constants.js';
import type { Hello } from '../../src/tunnel/handshake.js';
import { Session } from '../../src/tunnel/session.js';
import { sluiceVersion } from '../../src/version.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { EVENT_MS, within } from '../helpers/wait.js';

async function helloSent(version?: string): Promise<Record<string, unknown>> {
  const { a, b } = duplexPair();
  const raw = new RawPeer(b);
  const hello = { token: 't', agent: 'a', replica: 'r', ...(version === undefined ? {} : { version }) };
  const connecting = Session.connect(a, { hello });
  const frame = await raw.next(FrameType.HELLO);
  raw.send(encodeJsonFrame(FrameType.WELCOME, 0, { session: 'raw', window: 65536, caps: [] }));
  (await within(connecting, EVENT_MS, 'the session to open')).destroy();
  return decodeJsonObject(frame.payload, 'HELLO');
}

/** A server session facing a raw client whose HELLO carries `extra`; what authenticate saw, and the peer. */
async function accepted(extra: Record<string, unknown>) {
  const { a, b } = duplexPair();
  const raw = new RawPeer(a);
  let seen: Hello | undefined;
  const accepting = Session.accept(b, {
    authenticate: (hello) => {
      seen = hello;
      return { ok: true };
    },
  });
  raw.send(
    encodeJsonFrame(FrameType.HELLO, 0, { token: 't', agent: 'a', replica: 'r', window: 65536, ...extra }),
  );
  const session = await within(accepting, EVENT_MS, 'the session to open');
  const peer = session.peer;
  session.destroy();
  return { hello: seen!, peer: peer! };
}

describe('HELLO version', () => {
  test('the client sends the version it is given, and no field without one', async () => {
    assert.equal((await helloSent(sluiceVersion())).version, sluiceVersion());
    assert.ok(!('version' in (await helloSent())));
  });

  test('the server keeps the version on the peer and shows it to authenticate', async () => {
    const { hello, peer } = await accepted({ version: '1.2.3-rc.1' });
    assert.equal(hello.version, '1.2.3-rc.1');
    assert.equal(peer.version, '1.2.3-rc.1');
  });

  test('a HELLO without a version (an older agent) opens the session, with no version', async () => {
    const { hello, peer } = await accepted({});
    assert.equal(hello.version, undefined);
    assert.ok(!('version' in peer));
  });

  test('a malformed version is dropped, never fatal', async () => {
    for (const version of [42, '', 'has space', 'x'.repeat(65), '\u00e9t\u00e9', null]) {
      const { peer } = await accepted({ version });
      assert.equal(peer.version, undefined, JSON.stringify(version));
    }
  });
});
