// The agent's half of a TCP route's connection (docs/tcp.md): a fresh TCP connection to the target, a
// PROXY protocol v2 header first when the route asks for one, then bytes both ways with the stream's
// flow control. FIN maps to FIN in each direction on its own (the target's checked to be one first);
// a connection that breaks maps to an RST of the stream, and the stream's RST to an RST of the
// connection, also after our FIN. A failed connect resets the stream with the code deliver.ts uses
// for HTTP targets (refused, unreachable, timed out, denied address).
import { connect, type LookupFunction, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import type { DeliverObserver } from './deliver-types.js';
import type { TcpStreamMeta } from '../proxy/meta.js';
import { encodeProxyV2 } from '../proxy/proxy-protocol.js';
import { confirmFin, oneWay, resetRelayed } from '../proxy/splice.js';
import { armConnectTimeout, classify } from '../proxy/target.js';

type TunnelStream = Duplex & { reset(code: number, reason: string): void };

/** TCP keepalive probes on target sockets, as for upgraded connections. */
const KEEPALIVE_MS = 30_000;

export interface TcpTarget {
  host: string;
  port: number;
  /** DNS that refuses protected addresses; undefined when the policy named this target exactly. */
  lookup: LookupFunction | undefined;
  connectTimeoutMs: number;
}

export function deliverTcp(
  stream: TunnelStream,
  meta: TcpStreamMeta,
  target: TcpTarget,
  log: Logger,
  observer?: DeliverObserver,
): void {
  new TcpDelivery(stream, meta, target, log, observer).start();
}

class TcpDelivery {
  #socket: Socket | null = null;
  #connected = false;
  #done = false;
  #reset = -1;
  #error: Error | undefined;

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: TcpStreamMeta,
    private readonly target: TcpTarget,
    private readonly log: Logger,
    private readonly observer: DeliverObserver | undefined,
  ) {}

  start(): void {
    // The client's bytes wait in the stream's window until the target's connection is up.
    this.stream.pause();
    this.stream.on('error', this.#onStreamError);
    this.stream.on('close', this.#onStreamClose);
    const { host, port, lookup } = this.target;
    const socket = connect({
      host,
      port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_MS,
      allowHalfOpen: true,
      ...(lookup === undefined ? {} : { lookup }),
    });
    this.#socket = socket;
    armConnectTimeout(socket, this.target.connectTimeoutMs);
    socket.on('error', this.#onSocketError);
    socket.once('connect', this.#onConnect);
    socket.on('close', this.#onSocketClose);
  }

  readonly #onConnect = (): void => {
    this.#connected = true;
    const socket = this.#socket!;
    if (this.meta.proxyProtocol === 'v2') {
      const a = this.meta.addresses;
      socket.write(
        encodeProxyV2(
          a === undefined
            ? undefined
            : {
                sourceAddress: a.clientAddress,
                sourcePort: a.clientPort,
                destinationAddress: a.listenAddress,
                destinationPort: a.listenPort,
              },
        ),
      );
    }
    oneWay(this.stream, socket);
    // The target's FIN is passed on here, once it proved not to be a reset (a truncated answer).
    oneWay(socket, this.stream, false);
    socket.once('end', () =>
      confirmFin(socket, () => {
        if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
      }),
    );
    this.log.debug({ target: this.meta.target }, 'tcp connected');
  };

  readonly #onSocketError = (err: NodeJS.ErrnoException): void => {
    if (this.#done) return;
    if (!this.#connected) {
      const [code, reason] = classify(err, this.meta.target);
      this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, 'target connect failed');
      this.#abort(code, reason);
      return;
    }
    this.#abort(ErrorCode.CANCEL, `target connection failed: ${err.code ?? err.message}`);
  };

  readonly #onSocketClose = (hadError: boolean): void => {
    if (this.#done) return;
    // A clean close comes after both FINs; anything else (an RST, a close without FIN) is a reset.
    const socket = this.#socket!;
    if (hadError || !socket.readableEnded || !socket.writableFinished) {
      this.#abort(ErrorCode.CANCEL, 'target closed the connection');
      return;
    }
    // The target's FIN reached the stream already; once ours is written the stream closes too.
    if (!this.stream.writableEnded) this.stream.end();
  };

  readonly #onStreamError = (err: Error): void => {
    // The controller reset the stream (its client went away): the target's connection is cut.
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
    // Both directions ended with a FIN: the socket closes on its own once its FIN is out. Otherwise
    // cut it with an RST, so that the target does not take a broken relay for a clean end.
    if (socket !== null && !socket.destroyed && !(socket.readableEnded && socket.writableEnded)) {
      resetRelayed(socket);
    }
    if (!this.stream.destroyed) this.stream.destroy();
    this.observer?.streamDone('tcp', 0, this.#reset, this.#error);
  }
}
