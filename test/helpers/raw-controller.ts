// A hostile controller for agent tests: a TCP tunnel listener that a real agent (a child process or an
// in-process startAgent) dials, played by a RawPeer, so a test can send SYNs the real controller would
// never build and see exactly which frames the agent answers with.
import { createServer, type Server, type Socket } from 'node:net';
import {
  decodeCodeReason,
  encodeFrame,
  encodeJsonFrame,
  encodeWindowUpdate,
} from '../../src/protocol/codec.js';
import { Flag, FrameType } from '../../src/protocol/constants.js';
import { RecordKind, RECORD_HEADER_SIZE } from '../../src/proxy/envelope.js';
import { listenOnLoopback } from './listen.js';
import { type RawFrame, RawPeer } from './raw-peer.js';
import { within } from './wait.js';

/** How the agent ended one stream: a reset with its code, or a response (HEAD status, body, FIN). */
export type Outcome =
  | { kind: 'rst'; code: number; reason: string }
  | { kind: 'response'; status: number; headers: string[]; body: Buffer };

export class RawController {
  readonly server: Server;
  readonly url: string;
  #peers: RawPeer[] = [];
  #waiting: ((peer: RawPeer) => void)[] = [];
  readonly #nextId = new WeakMap<RawPeer, number>();
  readonly #sockets = new Set<Socket>();

  private constructor(server: Server, port: number) {
    this.server = server;
    this.url = `tcp://127.0.0.1:${port}`;
  }

  static async start(): Promise<RawController> {
    const accept: { to?: RawController } = {};
    const server = createServer((socket) => {
      if (accept.to !== undefined) void accept.to.#accept(socket);
    });
    const port = await listenOnLoopback(server);
    accept.to = new RawController(server, port);
    return accept.to;
  }

  async #accept(socket: Socket): Promise<void> {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    const peer = new RawPeer(socket);
    await peer.welcome().catch(() => {});
    this.#peers.push(peer);
    for (const resolve of this.#waiting.splice(0)) resolve(peer);
  }

  /** The newest agent tunnel that completed its handshake and is still open. */
  tunnel(ms = 30_000): Promise<RawPeer> {
    const peer = this.#peers.findLast((p) => !p.ended && !p.transport.destroyed);
    if (peer !== undefined) return Promise.resolve(peer);
    return within(new Promise((resolve) => this.#waiting.push(resolve)), ms, 'an agent tunnel');
  }

  /**
   * Opens a stream with `meta` (any JSON, as a hostile controller may send), sends `body` (raw: the
   * caller frames records) and FIN, and resolves with how the agent ended the stream.
   */
  async open(meta: unknown, body: Buffer = Buffer.alloc(0), ms = 30_000): Promise<Outcome> {
    const peer = await this.tunnel();
    const id = this.#nextId.get(peer) ?? 2;
    this.#nextId.set(peer, id + 2);
    const outcome = streamOutcome(peer, id, ms);
    peer.send(encodeJsonFrame(FrameType.SYN, id, meta as object));
    peer.send(encodeFrame(FrameType.DATA, Flag.FIN, id, body));
    return outcome;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Collects one stream's frames until its RST or its FIN and decodes the response records. */
function streamOutcome(peer: RawPeer, id: number, ms: number): Promise<Outcome> {
  const chunks: Buffer[] = [];
  const done = new Promise<Outcome>((resolve, reject) => {
    const gone = (): void => reject(new Error(`the agent ended the tunnel before answering stream ${id}`));
    peer.once('ended', gone);
    peer.transport.once('close', gone);
    if (peer.ended || peer.transport.destroyed) gone();
    const onFrame = (f: RawFrame): void => {
      if (f.streamId !== id) return;
      if (f.type === FrameType.RST) {
        peer.off('frame', onFrame);
        const { code, reason } = decodeCodeReason(f.payload);
        resolve({ kind: 'rst', code, reason });
        return;
      }
      if (f.type !== FrameType.DATA) return;
      chunks.push(f.payload);
      // Credit back what was read, so that a large answer cannot stall on the window.
      if (f.payload.length > 0) peer.send(encodeWindowUpdate(id, f.payload.length));
      if ((f.flags & Flag.FIN) === 0) return;
      peer.off('frame', onFrame);
      resolve(decodeResponse(Buffer.concat(chunks)));
    };
    peer.on('frame', onFrame);
  });
  return within(done, ms, `the agent's answer on stream ${id}`);
}

function decodeResponse(bytes: Buffer): Outcome {
  let off = 0;
  let head: { status: number; headers: string[] } | undefined;
  const body: Buffer[] = [];
  while (off + RECORD_HEADER_SIZE <= bytes.length) {
    const kind = bytes[off]!;
    const length = bytes.readUInt32BE(off + 1);
    const payload = bytes.subarray(off + RECORD_HEADER_SIZE, off + RECORD_HEADER_SIZE + length);
    off += RECORD_HEADER_SIZE + length;
    if (kind === RecordKind.HEAD) {
      const parsed = JSON.parse(payload.toString('utf8')) as { status: number; headers: string[] };
      if (parsed.status >= 200) head = parsed;
    } else if (kind === RecordKind.BODY) {
      body.push(payload);
    }
  }
  if (head === undefined) throw new Error(`stream ended without a final HEAD (${bytes.length} bytes)`);
  return { kind: 'response', status: head.status, headers: head.headers, body: Buffer.concat(body) };
}
