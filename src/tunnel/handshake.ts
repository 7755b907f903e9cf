// The session handshake (docs/protocol.md §4). The client sends HELLO; the server authenticates it and
// answers WELCOME, or GO_AWAY with UNAUTHORIZED or FORBIDDEN. Either side gives up after the handshake
// timeout. The session hands every frame before the open to its handshake, GO_AWAY excepted, and the
// handshake reports back through a narrow host: write a frame, fail, or open.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { codeForWire, ProtocolError, SessionError, SluiceError } from '../errors.js';
import { decodeJsonObject, encodeJsonFrame } from '../protocol/codec.js';
import { ErrorCode, FrameType, Limits } from '../protocol/constants.js';

/** What the client announces in HELLO (docs/protocol.md §4), as the server sees it. */
export interface Hello {
  readonly token: string;
  readonly agent: string;
  readonly replica: string;
  readonly caps: readonly string[];
  readonly window: number;
  /** The client's software version, when it said one (optional; absent from older agents). */
  readonly version?: string;
}

/** The peer as this side knows it after the handshake. The token is never kept. */
export interface PeerInfo {
  readonly agent: string;
  readonly replica: string;
  readonly caps: readonly string[];
  /** The peer's software version, when its HELLO carried one. */
  readonly version?: string;
}

export type AuthResult =
  | { readonly ok: true; readonly caps?: readonly string[] }
  | {
      readonly ok: false;
      /** OVERLOAD: not refused for its token, but asked to come back later (docs/protocol.md §4). */
      readonly code: 'UNAUTHORIZED' | 'FORBIDDEN' | 'OVERLOAD';
      readonly reason: string;
    };

/** What the client side sends in HELLO, besides its window. */
export interface ClientHello {
  token: string;
  agent: string;
  replica: string;
  caps?: readonly string[];
  /** This side's software version, e.g. `0.1.0`; left out of HELLO when absent. */
  version?: string;
}

/** The server side's part: who may open a session, and what it offers. */
export interface ServerAuth {
  authenticate(hello: Hello): AuthResult | Promise<AuthResult>;
  /** Capabilities this server offers; WELCOME carries the ones both sides share. */
  caps?: readonly string[];
}

/** What a completed handshake settled. */
export interface Established {
  readonly id: string;
  readonly peer: PeerInfo;
  /** The peer's initial per-stream window: our send credit on each new stream. */
  readonly peerWindow: number;
}

/** What a handshake needs from its session. */
export interface HandshakeHost {
  readonly log: Logger;
  write(frame: Buffer): void;
  /** Ends the session with `err`, sending GO_AWAY(`goAwayCode`, `reason`) first when a code is given. */
  fail(err: Error, goAwayCode?: number, reason?: string): void;
  /** The handshake is done: the session opens with what it settled. */
  established(result: Established): void;
  /** False once the session opened or ended: a late authenticate() result is then dropped. */
  inHandshake(): boolean;
}

/** HELLO for `hello` and our window. Throws SLUICE_ERR_FRAME_SIZE if it is too large to send. */
export function encodeHello(hello: ClientHello, window: number): Buffer {
  const { token, agent, replica, caps = [], version } = hello;
  const body = { token, agent, replica, caps, window, ...(version === undefined ? {} : { version }) };
  try {
    return encodeJsonFrame(FrameType.HELLO, 0, body);
  } catch (err) {
    throw new SluiceError('SLUICE_ERR_FRAME_SIZE', `HELLO: ${(err as Error).message}`);
  }
}

/** One side's handshake: the frames it expects, and the timeout that bounds it. */
export abstract class Handshake {
  protected readonly host: HandshakeHost;
  #timer: NodeJS.Timeout | null;

  constructor(host: HandshakeHost, timeoutMs: number) {
    this.host = host;
    this.#timer = setTimeout(() => this.#onTimeout(timeoutMs), timeoutMs);
    this.#timer.unref();
  }

  /** A frame before the open, other than GO_AWAY. Throws a ProtocolError for one out of place. */
  abstract onFrame(type: number, payload: Buffer): void;

  /** The session opened or ended: the timeout no longer applies. */
  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  protected unexpected(type: number): ProtocolError {
    return new ProtocolError(`unexpected frame type 0x${type.toString(16)} during the handshake`);
  }

  #onTimeout(timeoutMs: number): void {
    this.#timer = null;
    const err = new SessionError(
      'SLUICE_ERR_HANDSHAKE_TIMEOUT',
      `handshake not completed within ${timeoutMs}ms`,
      ErrorCode.HANDSHAKE_TIMEOUT,
    );
    this.host.fail(err, ErrorCode.HANDSHAKE_TIMEOUT);
  }
}

/** The client: HELLO is already written; it waits for WELCOME. */
export class ClientHandshake extends Handshake {
  onFrame(type: number, payload: Buffer): void {
    if (type !== FrameType.WELCOME) throw this.unexpected(type);
    const welcome = decodeJsonObject(payload, 'WELCOME');
    const window = welcome.window;
    if (!isWindow(window)) throw new ProtocolError('WELCOME without a valid window');
    const id = typeof welcome.session === 'string' ? welcome.session : '';
    const caps = Array.isArray(welcome.caps) ? welcome.caps.filter((c) => typeof c === 'string') : [];
    this.host.established({ id, peer: { agent: 'controller', replica: id, caps }, peerWindow: window });
  }
}

/** The server: waits for HELLO, asks `authenticate`, and answers WELCOME or a GO_AWAY refusal. */
export class ServerHandshake extends Handshake {
  #auth: ServerAuth | null;
  readonly #window: number;

  constructor(host: HandshakeHost, timeoutMs: number, auth: ServerAuth, window: number) {
    super(host, timeoutMs);
    this.#auth = auth;
    this.#window = window;
  }

  onFrame(type: number, payload: Buffer): void {
    if (type !== FrameType.HELLO) throw this.unexpected(type);
    const hello = parseHello(decodeJsonObject(payload, 'HELLO'));
    if (this.#auth === null) throw new ProtocolError('second HELLO');
    const auth = this.#auth;
    this.#auth = null;
    Promise.resolve()
      .then(() => auth.authenticate(hello))
      .then(
        (result) => this.#answer(hello, result, auth.caps ?? []),
        (err: Error) =>
          this.host.fail(
            new SessionError(
              'SLUICE_ERR_INTERNAL',
              `authenticate failed: ${err.message}`,
              ErrorCode.INTERNAL_ERROR,
              { cause: err },
            ),
            ErrorCode.INTERNAL_ERROR,
          ),
      );
  }

  #answer(hello: Hello, result: AuthResult, ownCaps: readonly string[]): void {
    const host = this.host;
    if (!host.inHandshake()) return;
    if (!result.ok) {
      const wire = ErrorCode[result.code];
      // Debug only: the caller decides what a refusal is worth in its log (the controller samples them).
      host.log.debug({ agent: hello.agent, replica: hello.replica, code: result.code }, 'refused agent');
      return host.fail(
        new SessionError(codeForWire(wire), `refused: ${result.reason}`, wire),
        wire,
        result.reason,
      );
    }
    const offered = result.caps ?? ownCaps;
    const caps = offered.filter((c) => hello.caps.includes(c));
    const id = randomBytes(8).toString('hex');
    host.write(encodeJsonFrame(FrameType.WELCOME, 0, { session: id, window: this.#window, caps }));
    host.established({
      id,
      peer: {
        agent: hello.agent,
        replica: hello.replica,
        caps,
        ...(hello.version === undefined ? {} : { version: hello.version }),
      },
      peerWindow: hello.window,
    });
  }
}

function isWindow(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= Limits.MIN_WINDOW && v <= Limits.MAX_WINDOW;
}

function isName(v: unknown): v is string {
  return typeof v === 'string' && v.length >= 1 && v.length <= 128;
}

/** A version is informational: one that is not 1 to 64 printable ASCII characters is dropped, never fatal. */
function versionOf(v: unknown): { version?: string } {
  return typeof v === 'string' && /^[\x21-\x7e]{1,64}$/.test(v) ? { version: v } : {};
}

function parseHello(o: Record<string, unknown>): Hello {
  if (typeof o.token !== 'string') throw new ProtocolError('HELLO without a token');
  if (!isName(o.agent)) throw new ProtocolError('HELLO agent must be a string of 1 to 128 characters');
  if (!isName(o.replica)) throw new ProtocolError('HELLO replica must be a string of 1 to 128 characters');
  if (!isWindow(o.window)) throw new ProtocolError('HELLO without a valid window');
  const caps = Array.isArray(o.caps) ? o.caps.filter((c): c is string => typeof c === 'string') : [];
  return {
    token: o.token,
    agent: o.agent,
    replica: o.replica,
    caps,
    window: o.window,
    ...versionOf(o.version),
  };
}
