// The stream lifecycle: the transition table is pinned, it matches the five booleans it replaced
// (accepted, ackPending, localFin, remoteFin, detached) event for event, and real streams driven by a
// raw peer pass through the states it names, with the getters the booleans had.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeFrame, encodeJsonFrame, encodeRst } from '../../src/protocol/codec.js';
import { ErrorCode, Flag, FrameType } from '../../src/protocol/constants.js';
import { Session } from '../../src/tunnel/session.js';
import { type Stream, type StreamEvent, type StreamState, TRANSITIONS } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { waitFor, within } from '../helpers/wait.js';

const EVENTS: readonly StreamEvent[] = ['ackReceived', 'ackSent', 'finSent', 'finReceived', 'reset'];

/** The stream's lifecycle as the booleans of the code before the named state had it. */
interface Flags {
  accepted: boolean;
  ackPending: boolean;
  localFin: boolean;
  remoteFin: boolean;
  detached: boolean;
}

const OPENED_HERE: Flags = {
  accepted: false,
  ackPending: false,
  localFin: false,
  remoteFin: false,
  detached: false,
};
const OPENED_BY_PEER: Flags = { ...OPENED_HERE, accepted: true, ackPending: true };

/**
 * One event on the old booleans, or undefined where the old code could not take it: the session threw
 * a protocol error first (a second FIN, an ACK not awaited), or no frame reached a detached stream. Our
 * FIN needs no pending ACK: the session writes that ACK right before it, reported as `ackSent` first.
 */
function oldStep(f: Flags, event: StreamEvent): Flags | undefined {
  if (f.detached) return undefined;
  switch (event) {
    case 'ackReceived':
      return f.accepted ? undefined : { ...f, accepted: true };
    case 'ackSent':
      return f.ackPending ? { ...f, ackPending: false } : undefined;
    case 'finSent':
      return f.localFin || f.ackPending ? undefined : { ...f, localFin: true, detached: f.remoteFin };
    case 'finReceived':
      return f.remoteFin ? undefined : { ...f, remoteFin: true, detached: f.localFin };
    case 'reset':
      return { ...f, ackPending: false, detached: true };
  }
}

/** The state that stands for a combination of the old booleans. */
function named(f: Flags): StreamState {
  if (f.detached) return f.localFin && f.remoteFin ? 'closed' : 'reset';
  if (!f.accepted) {
    if (f.localFin) return 'synSentLocalClosed';
    return f.remoteFin ? 'synSentRemoteClosed' : 'synSent';
  }
  if (f.ackPending) return f.remoteFin ? 'synReceivedRemoteClosed' : 'synReceived';
  if (f.localFin) return 'localClosed';
  return f.remoteFin ? 'remoteClosed' : 'established';
}

const key = (f: Flags): string => JSON.stringify(f);

function reachableFlags(): Flags[] {
  const seen = new Map<string, Flags>();
  const todo = [OPENED_HERE, OPENED_BY_PEER];
  for (let i = 0; i < 1000 && todo.length > 0; i++) {
    const f = todo.pop()!;
    if (seen.has(key(f))) continue;
    seen.set(key(f), f);
    for (const e of EVENTS) {
      const next = oldStep(f, e);
      if (next !== undefined) todo.push(next);
    }
  }
  return [...seen.values()];
}

describe('the stream state table', () => {
  test('is pinned, transition by transition', () => {
    assert.deepEqual(TRANSITIONS, {
      synSent: {
        ackReceived: 'established',
        finSent: 'synSentLocalClosed',
        finReceived: 'synSentRemoteClosed',
        reset: 'reset',
      },
      synSentLocalClosed: { ackReceived: 'localClosed', finReceived: 'closed', reset: 'reset' },
      synSentRemoteClosed: { ackReceived: 'remoteClosed', finSent: 'closed', reset: 'reset' },
      synReceived: { ackSent: 'established', finReceived: 'synReceivedRemoteClosed', reset: 'reset' },
      synReceivedRemoteClosed: { ackSent: 'remoteClosed', reset: 'reset' },
      established: { finSent: 'localClosed', finReceived: 'remoteClosed', reset: 'reset' },
      localClosed: { finReceived: 'closed', reset: 'reset' },
      remoteClosed: { finSent: 'closed', reset: 'reset' },
      closed: {},
      reset: {},
    });
  });

  test('moves exactly as the old booleans did, from every combination they could reach', () => {
    const flags = reachableFlags();
    const live = flags.filter((f) => !f.detached);
    assert.equal(new Set(live.map(named)).size, live.length, 'each live state names one combination');
    assert.deepEqual(new Set(flags.map(named)), new Set(Object.keys(TRANSITIONS)), 'every state is reached');
    for (const f of flags) {
      for (const e of EVENTS) {
        const old = oldStep(f, e);
        const next = TRANSITIONS[named(f)][e];
        assert.equal(next, old === undefined ? undefined : named(old), `${e} from ${key(f)}`);
      }
    }
  });

  test('ends only in closed or reset, and closed only after both FINs', () => {
    for (const [state, row] of Object.entries(TRANSITIONS)) {
      const terminal = state === 'closed' || state === 'reset';
      assert.equal(Object.keys(row).length === 0, terminal, state);
      if (!terminal) assert.equal(row.reset, 'reset', `${state} can be reset`);
    }
    for (const f of reachableFlags()) if (named(f) === 'closed') assert.ok(f.localFin && f.remoteFin);
  });
});

type Step = StreamEvent | 'localReset';

/** The frame a raw peer sends for one of its steps on stream `id`. */
function peerFrame(step: Step, id: number): Buffer | undefined {
  if (step === 'ackReceived') return encodeFrame(FrameType.ACK, 0, id);
  if (step === 'finReceived') return encodeFrame(FrameType.DATA, Flag.FIN, id);
  if (step === 'reset') return encodeRst(id, ErrorCode.CANCEL, 'peer reset');
  return undefined;
}

/** Opens a stream from a raw peer; its first frames ride in the same read as the SYN. */
async function takeFromRaw(session: Session, raw: RawPeer, first: Buffer[]): Promise<Stream> {
  const taken = new Promise<Stream>((resolve) => {
    session.once('stream', (s: Stream) => resolve(s.on('error', () => {})));
  });
  raw.send(Buffer.concat([encodeJsonFrame(FrameType.SYN, 1, {}), ...first]));
  return within(taken, 5000, 'the peer-opened stream');
}

/**
 * Drives one real stream through `steps` against a raw peer, checking its state and getters after
 * each. A stream the peer opens gets its ACK within 10 ms even when it sends nothing, so the peer's
 * steps before our first one go out with the SYN, and the state is checked before that delay can end.
 */
async function drive(opener: 'here' | 'peer', steps: readonly Step[]): Promise<void> {
  const { a, b } = duplexPair();
  const here = opener === 'here';
  const raw = new RawPeer(here ? b : a);
  const sessionP = here
    ? Session.connect(a, { hello: { token: 't', agent: 'a', replica: 'r' } })
    : Session.accept(b, { authenticate: () => ({ ok: true }) });
  if (here) await raw.welcome();
  else await raw.hello();
  const session = await sessionP;
  try {
    let flags = here ? OPENED_HERE : OPENED_BY_PEER;
    let rest = steps;
    let stream: Stream;
    if (here) {
      stream = session.open({}).on('error', () => {});
    } else {
      let lead = 0;
      while (lead < steps.length && peerFrame(steps[lead]!, 1) !== undefined) lead++;
      for (const step of steps.slice(0, lead)) flags = oldStep(flags, step as StreamEvent)!;
      stream = await takeFromRaw(
        session,
        raw,
        steps.slice(0, lead).map((step) => peerFrame(step, 1)!),
      );
      rest = steps.slice(lead);
    }
    stream.resume();
    const check = async (what: string) => {
      assert.ok(flags, `${what} is a step the old code could take`);
      await waitFor(`${named(flags)} after ${what}`, () => stream.state === named(flags), 5000);
      const { accepted, ackPending, localFin, remoteFin, detached } = stream;
      assert.deepEqual({ accepted, ackPending, localFin, remoteFin, detached }, flags, what);
    };
    await check(`the open${rest === steps ? '' : ` with ${steps.slice(0, steps.length - rest.length)}`}`);
    for (const step of rest) {
      flags = oldStep(flags, step === 'localReset' ? 'reset' : step)!;
      const frame = peerFrame(step, stream.id);
      if (frame !== undefined) raw.send(frame);
      if (step === 'ackSent') stream.write('x'); // the ACK rides with this first DATA
      if (step === 'finSent') stream.end();
      if (step === 'localReset') stream.reset(ErrorCode.CANCEL, 'local reset');
      await check(step);
    }
    if (stream.detached) await waitFor('the stream to leave the table', () => session.streamCount === 0);
  } finally {
    session.destroy();
  }
}

describe('real streams pass through the named states', () => {
  const paths: [opener: 'here' | 'peer', steps: Step[]][] = [
    ['here', ['finSent', 'ackReceived', 'finReceived']],
    ['here', ['finSent', 'finReceived']],
    ['here', ['finReceived', 'ackReceived', 'finSent']],
    ['here', ['finReceived', 'finSent']],
    ['here', ['ackReceived', 'finReceived', 'finSent']],
    ['here', ['ackReceived', 'finSent', 'reset']],
    ['here', ['finSent', 'reset']],
    ['here', ['localReset']],
    ['peer', ['finReceived', 'ackSent', 'finSent']],
    ['peer', ['ackSent', 'finSent', 'finReceived']],
    ['peer', ['ackSent', 'finReceived', 'localReset']],
    ['peer', ['finReceived', 'reset']],
    ['peer', ['reset']],
  ];
  for (const [opener, steps] of paths) {
    test(`opened ${opener === 'here' ? 'here' : 'by the peer'}: ${steps.join(', ')}`, () =>
      drive(opener, steps));
  }
});
