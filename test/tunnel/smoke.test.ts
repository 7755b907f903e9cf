import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { Session } from '../../src/tunnel/session.js';
import { duplexPair } from '../helpers/duplex-pair.js';

test('smoke: handshake, open, echo, close', async () => {
  const { a, b } = duplexPair();
  const serverP = Session.accept(b, { authenticate: () => ({ ok: true }) });
  const client = await Session.connect(a, { hello: { token: 't', agent: 'ag', replica: 'r1' } });
  const server = await serverP;
  server.on('stream', (s) => s.pipe(s));
  const s = client.open({ kind: 'echo' });
  s.end(Buffer.from('hello'));
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c);
  assert.equal(Buffer.concat(chunks).toString(), 'hello');
  await client.close();
  assert.equal(client.streamCount, 0);
  await once(server, 'close');
});
