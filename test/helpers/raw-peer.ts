// A hand-driven protocol peer: writes frames built with the codec and records what it receives, for
// tests that need a peer which breaks the rules or stays silent.
import { EventEmitter, once } from 'node:events';
import type { Duplex } from 'node:stream';
import { encodeJsonFrame, FrameDecoder } from '../../src/protocol/codec.js';
import { FrameType } from '../../src/protocol/constants.js';
import { EVENT_MS, within } from './wait.js';

export interface RawFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export class RawPeer extends EventEmitter {
  readonly frames: RawFrame[] = [];
  readonly transport: Duplex;
  ended = false;

  constructor(transport: Duplex) {
    super();
    this.transport = transport;
    const decoder = new FrameDecoder((type, flags, streamId, payload) => {
      const frame = { type, flags, streamId, payload: Buffer.from(payload) };
      this.frames.push(frame);
      this.emit('frame', frame);
    });
    transport.on('data', (chunk: Buffer) => decoder.push(chunk));
    transport.on('end', () => {
      this.ended = true;
      this.emit('ended');
    });
    transport.on('error', () => {});
  }

  send(...frames: Buffer[]): void {
    for (const f of frames) this.transport.write(f);
  }

  /** Resolves with the first frame of `type` received (earlier ones count too). */
  async next(type: number, ms = EVENT_MS): Promise<RawFrame> {
    const seen = this.frames.find((f) => f.type === type);
    if (seen) return seen;
    const waiting = new Promise<RawFrame>((resolve) => {
      const onFrame = (f: RawFrame) => {
        if (f.type !== type) return;
        this.off('frame', onFrame);
        resolve(f);
      };
      this.on('frame', onFrame);
    });
    return within(waiting, ms, `a frame of type ${type}`);
  }

  async closedByPeer(ms = EVENT_MS): Promise<void> {
    if (!this.ended) await within(once(this, 'ended'), ms, 'the peer to end the transport');
  }

  /** Plays the server's part of the handshake. */
  async welcome(window = 4 * 1024 * 1024): Promise<void> {
    await this.next(FrameType.HELLO);
    this.send(encodeJsonFrame(FrameType.WELCOME, 0, { session: 'raw', window, caps: [] }));
  }

  /** Plays the client's part of the handshake and waits for WELCOME. */
  async hello(window = 4 * 1024 * 1024): Promise<void> {
    this.send(
      encodeJsonFrame(FrameType.HELLO, 0, { token: 't', agent: 'raw', replica: 'r', caps: [], window }),
    );
    await this.next(FrameType.WELCOME);
  }
}
