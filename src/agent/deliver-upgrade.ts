// The agent's half of an upgraded connection (docs/http-over-streams.md, "Upgrades"): a fresh connection
// to the target, the request head written on it, the target's answer relayed. A 101 goes back as one
// HEAD with its headers verbatim (Sec-WebSocket-Accept, -Protocol, -Extensions), then bytes are piped
// raw both ways; any other answer goes back as an ordinary response. The client's bytes wait in the
// stream's window until the target has answered, so none is lost and none reaches a target that
// refused the upgrade.
import { type ClientRequest, type IncomingMessage, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { SecureContext } from 'node:tls';
import type { LookupFunction, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import type { DeliverObserver } from './deliver-types.js';
import { encodeHead } from '../proxy/envelope.js';
import type { HttpStreamMeta } from '../proxy/meta.js';
import { relayResponse } from '../proxy/relay.js';
import { oneWay } from '../proxy/splice.js';
import { resetSocket } from '../proxy/upgrade.js';
import { armConnectTimeout, classify, targetHeaders } from '../proxy/target.js';

type TunnelStream = Duplex & { reset(code: number, reason: string): void };

/** TCP keepalive probes on upgraded target sockets, so that an idle connection stays known-alive. */
const KEEPALIVE_MS = 30_000;

export interface UpgradeTarget {
  host: string;
  port: number;
  /** DNS that refuses protected addresses; undefined when the policy named this target exactly. */
  lookup: LookupFunction | undefined;
  connectTimeoutMs: number;
  /** For an https:// target: TLS to it, verified with this context (undefined: the system roots). */
  tls?: { servername: string; secureContext: SecureContext | undefined } | undefined;
}

export function deliverUpgrade(
  stream: TunnelStream,
  meta: HttpStreamMeta,
  target: UpgradeTarget,
  log: Logger,
  observer?: DeliverObserver,
): void {
  new UpgradeDelivery(stream, meta, target, log, observer).start();
}

class UpgradeDelivery {
  #req: ClientRequest | null = null;
  #socket: Socket | null = null;
  #answered = false;
  #done = false;
  // For the observer: the target's status, the code this side reset the stream with, the stream's error.
  #status = 0;
  #reset = -1;
  #error: Error | undefined;

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: HttpStreamMeta,
    private readonly target: UpgradeTarget,
    private readonly log: Logger,
    private readonly observer: DeliverObserver | undefined,
  ) {}

  start(): void {
    const { head } = this.meta;
    // Nothing is read from the stream until the target answers (see the file comment).
    this.stream.pause();
    this.stream.on('error', this.#onStreamError);
    this.stream.on('close', this.#onStreamClose);
    let req: ClientRequest;
    try {
      const options = {
        host: this.target.host,
        port: this.target.port,
        method: head.method,
        path: head.path,
        headers: targetHeaders(head),
        setHost: false,
        // Its own connection: an upgraded socket never returns to a pool.
        agent: false as const,
        lookup: this.target.lookup,
      };
      const tls = this.target.tls;
      req =
        tls === undefined
          ? request(options)
          : httpsRequest({
              ...options,
              servername: tls.servername,
              rejectUnauthorized: true,
              ...(tls.secureContext === undefined ? {} : { secureContext: tls.secureContext }),
            });
    } catch (err) {
      // As in deliver.ts: what parseStreamMeta missed still resets only this stream.
      this.log.warn({ err: (err as Error).message }, 'stream refused: Node refused the request head');
      this.#abort(ErrorCode.PROTOCOL_ERROR, `request head refused: ${(err as Error).message}`.slice(0, 200));
      return;
    }
    this.#req = req;
    req.on('socket', (socket: Socket) => {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, KEEPALIVE_MS);
      armConnectTimeout(socket, this.target.connectTimeoutMs);
    });
    req.on('upgrade', this.#onUpgrade);
    req.on('response', this.#onResponse);
    req.on('error', this.#onRequestError);
    req.end();
  }

  readonly #onUpgrade = (res: IncomingMessage, socket: Socket, head: Buffer): void => {
    this.#answered = true;
    this.#status = 101;
    this.#socket = socket;
    const { stream } = this;
    stream.write(encodeHead({ status: 101, statusText: res.statusMessage ?? '', headers: res.rawHeaders }));
    // Bytes the target sent right behind its 101 come first, in order.
    if (head.length > 0) stream.write(head);
    socket.setTimeout(0);
    // http.request's sockets are not half-open: on the target's FIN Node would end our side too, and
    // the client's later bytes would be dropped as writes after end. Our side ends on the stream's FIN.
    socket.allowHalfOpen = true;
    socket.on('error', ignore);
    oneWay(socket, stream, false);
    oneWay(stream, socket, false);
    // FIN maps to FIN; a socket that closes without one maps to a reset.
    socket.on('end', () => stream.end());
    stream.on('end', () => socket.end());
    socket.on('close', (hadError: boolean) => {
      // A clean close comes after both FINs (the target's, and ours on the controller's FIN).
      // Anything else is a reset.
      if (!this.#done && (hadError || !socket.readableEnded)) {
        this.#abort(ErrorCode.CANCEL, 'target closed the connection');
      }
    });
    stream.resume();
    this.log.debug({ target: this.meta.target }, 'upgraded');
  };

  readonly #onResponse = (res: IncomingMessage): void => {
    this.#answered = true;
    this.#status = res.statusCode ?? 0;
    // A refused upgrade is an ordinary response; the client's raw bytes were meant for a protocol
    // that never started, so they are read and dropped.
    relayResponse(res, this.stream, this.meta, () =>
      this.#abort(ErrorCode.CANCEL, 'target closed mid-response'),
    );
    this.stream.on('data', ignore);
    this.stream.resume();
  };

  readonly #onRequestError = (err: NodeJS.ErrnoException): void => {
    if (this.#answered || this.#done) return;
    const [code, reason] = classify(err, this.meta.target);
    const what = code === ErrorCode.TARGET_TLS ? 'target TLS failed' : 'target upgrade failed';
    this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, what);
    this.#abort(code, reason);
  };

  readonly #onStreamError = (err: Error): void => {
    // The controller reset the stream: its client went away. The target sees its connection close.
    this.#error = err;
    this.#finish();
  };

  readonly #onStreamClose = (): void => {
    this.#finish();
  };

  #abort(code: number, reason: string): void {
    if (!this.stream.destroyed) {
      if (this.#reset < 0) this.#reset = code;
      this.stream.reset(code, reason);
    }
    this.#finish();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    const socket = this.#socket;
    if (socket !== null) {
      // Both directions ended cleanly: let the socket's FIN go out. Otherwise cut it with an RST, so
      // the target does not take a reset for the client's clean end (resetSocket closes plainly once
      // our FIN is on its way, as after an agent's drain ended the stream first).
      if (!(socket.readableEnded && socket.writableEnded)) resetSocket(socket);
    } else if (this.#req !== null) {
      this.#req.on('error', ignore);
      this.#req.destroy();
    }
    if (!this.stream.destroyed) this.stream.destroy();
    this.observer?.streamDone('upgrade', this.#status, this.#reset, this.#error);
  }
}

function ignore(): void {}
