// The cluster dispatcher over real sessions: it opens a stream on the cluster's least busy tunnel, tries
// the next one when the far end refuses a stream unprocessed (REFUSED_STREAM, an agent without a stream
// handler or draining) or a chosen tunnel cannot open one, skips the tunnels it is told to exclude, and
// says why when no tunnel is left (none connected, or the only agent draining).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  ClusterDispatcher,
  type DispatchHandler,
  MAX_ATTEMPTS,
  type Opened,
  type Unavailable,
} from '../../src/controller/dispatcher.js';
import { type Tunnel, TunnelRegistry } from '../../src/controller/tunnels.js';
import type { SluiceError } from '../../src/errors.js';
import type { SessionOptionsInput } from '../../src/tunnel/options.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { waitFor, within } from '../helpers/wait.js';

const pairs: SessionPair[] = [];

after(async () => {
  for (const p of pairs) await p.close();
});

type AgentMode = 'serve' | 'refuse' | 'hold';

/**
 * A tunnel of cluster c1 over an in-memory pair. Its agent side answers each stream with its name
 * (`serve`), has no stream handler and so refuses every stream with REFUSED_STREAM (`refuse`), or
 * keeps its streams open without a word (`hold`).
 */
async function addTunnel(
  registry: TunnelRegistry,
  agent: string,
  mode: AgentMode,
  options: SessionOptionsInput = {},
): Promise<Tunnel> {
  const pair = await sessionPair(async () => {
    const { a, b } = duplexPair();
    return { client: a, server: b, close: async () => {} };
  }, options);
  pairs.push(pair);
  if (mode !== 'refuse') {
    pair.client.on('stream', (stream: Stream) => {
      stream.on('error', ignore); // the controller side destroys what it left open
      if (mode === 'serve') stream.end(`hello from ${agent}`);
      else stream.resume();
    });
  }
  const tunnel: Tunnel = { session: pair.server, cluster: 'c1', agent, replica: 'r1', since: 0 };
  registry.add(tunnel);
  return tunnel;
}

type Result =
  | { kind: 'answered'; agent: string; body: string }
  | { kind: 'refused'; agent: string; code: string }
  | { kind: 'unavailable'; why: Unavailable };

/** Sends nothing, reads the answer; records every stream it ran on. */
class Recorder implements DispatchHandler<Result> {
  readonly runs: Opened[] = [];

  run(opened: Opened): Promise<Result> {
    this.runs.push(opened);
    const { stream, tunnel } = opened;
    return new Promise((resolve) => {
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => (body += chunk));
      stream.on('end', () => resolve({ kind: 'answered', agent: tunnel.agent, body }));
      stream.on('error', (err: SluiceError) =>
        resolve({ kind: 'refused', agent: tunnel.agent, code: err.code }),
      );
      stream.end();
    });
  }

  refusedUnprocessed(result: Result): boolean {
    return result.kind === 'refused' && result.code === 'SLUICE_ERR_STREAM_REFUSED';
  }

  unavailable(why: Unavailable): Result {
    return { kind: 'unavailable', why };
  }
}

const META = { kind: 'test' };

function ignore(): void {}

function dispatch(dispatcher: ClusterDispatcher, handler: Recorder): Promise<Result> {
  return within(dispatcher.dispatch('c1', META, handler), 30_000, 'the dispatch');
}

describe('ClusterDispatcher', () => {
  test('a stream refused unprocessed by the first tunnel is run again on the next', async () => {
    const registry = new TunnelRegistry();
    // Listed first, so that it wins the tie between two idle tunnels.
    await addTunnel(registry, 'refusing', 'refuse');
    await addTunnel(registry, 'serving', 'serve');
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.deepEqual(result, { kind: 'answered', agent: 'serving', body: 'hello from serving' });
    assert.deepEqual(
      handler.runs.map((r) => r.tunnel.agent),
      ['refusing', 'serving'],
    );
    assert.equal(handler.runs[1]!.skipped, undefined);
  });

  test('a result that is no refusal is the answer: one run only', async () => {
    const registry = new TunnelRegistry();
    await addTunnel(registry, 'serving', 'serve');
    await addTunnel(registry, 'other', 'serve');
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.equal(result.kind, 'answered');
    assert.equal(handler.runs.length, 1);
  });

  test('when every tunnel refuses, the last refusal is the answer', async () => {
    const registry = new TunnelRegistry();
    await addTunnel(registry, 'a', 'refuse');
    await addTunnel(registry, 'b', 'refuse');
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.deepEqual(result, { kind: 'refused', agent: 'b', code: 'SLUICE_ERR_STREAM_REFUSED' });
    assert.equal(handler.runs.length, 2);
  });

  test(`a stream goes to at most ${MAX_ATTEMPTS} tunnels`, async () => {
    const registry = new TunnelRegistry();
    for (let i = 0; i < MAX_ATTEMPTS + 2; i++) await addTunnel(registry, `r${i}`, 'refuse');
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.equal(result.kind, 'refused');
    assert.equal(handler.runs.length, MAX_ATTEMPTS);
    assert.equal(new Set(handler.runs.map((r) => r.tunnel)).size, MAX_ATTEMPTS, 'each tunnel once');
  });

  test('open() skips the excluded tunnels and adds the one it opened on', async () => {
    const registry = new TunnelRegistry();
    const first = await addTunnel(registry, 'first', 'serve');
    const second = await addTunnel(registry, 'second', 'serve');
    const dispatcher = new ClusterDispatcher(registry);
    const exclude = new Set([first]);
    const opened = dispatcher.open('c1', META, { exclude });
    assert.equal(opened.tunnel, second);
    assert.deepEqual([...exclude], [first, second]);
    opened.stream!.destroy();
    const none = dispatcher.open('c1', META, { exclude });
    assert.equal(none.tunnel, undefined);
    assert.equal(none.stream, undefined);
    if (none.tunnel === undefined) assert.equal(none.cause, 'none-left');
  });

  test('no tunnel: unavailable, with the registry’s reason, and nothing run', async () => {
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(new TunnelRegistry()), handler);
    assert.equal(result.kind, 'unavailable');
    if (result.kind !== 'unavailable') return;
    assert.equal(result.why.cause, 'none-left');
    assert.equal(result.why.reason, 'no agent of cluster c1 is connected');
    assert.equal(result.why.detail, 'no live tunnel');
    assert.equal(result.why.code, undefined);
    assert.equal(handler.runs.length, 0);
  });

  test('the only agent draining: unavailable, saying so', async () => {
    const registry = new TunnelRegistry();
    const tunnel = await addTunnel(registry, 'stopping', 'hold');
    const pair = pairs.at(-1)!;
    // A stream still running keeps the draining tunnel up, as a request in flight does.
    tunnel.session.open({ kind: 'held' }).on('error', ignore);
    await waitFor('the stream to reach the agent', () => pair.client.streamCount === 1, 30_000);
    // The agent's side sends GO_AWAY, as an agent that is stopping does.
    void pair.client.close(30_000);
    await waitFor('the GO_AWAY to arrive', () => tunnel.session.draining, 30_000);
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.equal(result.kind, 'unavailable');
    if (result.kind !== 'unavailable') return;
    assert.equal(result.why.reason, 'the only agent of cluster c1 is draining');
    assert.equal(handler.runs.length, 0);
  });

  test('a tunnel at its stream limit is skipped for the next, and its code is told', async () => {
    const registry = new TunnelRegistry();
    // `full` holds one stream, its limit; `busy` holds two of many. pick() prefers the fewer streams.
    const full = await addTunnel(registry, 'full', 'hold', { maxStreams: 1 });
    const busy = await addTunnel(registry, 'busy', 'hold');
    for (const t of [full, busy, busy]) t.session.open({ kind: 'held' }).on('error', ignore);
    const dispatcher = new ClusterDispatcher(registry);
    const exclude = new Set<Tunnel>();
    const opened = dispatcher.open('c1', META, { exclude });
    assert.equal(opened.tunnel, busy);
    assert.equal(opened.skipped, 'SLUICE_ERR_TOO_MANY_STREAMS');
    assert.deepEqual([...exclude], [full, busy]);
    opened.stream!.destroy();
  });

  test('the only tunnel cannot open a stream: unavailable as open-failed, with its code', async () => {
    const registry = new TunnelRegistry();
    const full = await addTunnel(registry, 'full', 'hold', { maxStreams: 1 });
    full.session.open({ kind: 'held' }).on('error', ignore);
    const handler = new Recorder();
    const result = await dispatch(new ClusterDispatcher(registry), handler);
    assert.equal(result.kind, 'unavailable');
    if (result.kind !== 'unavailable') return;
    assert.equal(result.why.cause, 'open-failed');
    assert.equal(result.why.reason, 'no tunnel could take the request');
    assert.equal(result.why.code, 'SLUICE_ERR_TOO_MANY_STREAMS');
    assert.match(result.why.detail, /limit/);
    assert.equal(handler.runs.length, 0);
  });
});
