// Opens streams to a cluster, for every front end (undici's Dispatcher, frp's proxy kinds): it chooses
// a tunnel, opens a stream on it, and tries the next tunnel when the one it chose cannot open one or
// the far end refused the stream unprocessed (REFUSED_STREAM from a draining agent). It knows streams
// and tunnels, not HTTP: what a front end runs on the stream, and whether that was refused before the
// far end acted on it, is the front end's to say (DispatchHandler).
import { SluiceError, type SluiceErrorCode } from '../errors.js';
import type { Stream, StreamMeta } from '../tunnel/stream.js';
import type { Tunnel } from './tunnels.js';

/** A request goes to at most this many tunnels when they cannot take it or refuse it unprocessed. */
export const MAX_ATTEMPTS = 3;

/**
 * Where the dispatcher finds tunnels: the local TunnelRegistry today. A fleet's peer controllers plug
 * in here as another source (or one that asks the registry first, then the peers), whose tunnels lead
 * to a controller that holds one of the cluster's agents.
 */
export interface TunnelSource {
  /** The tunnel of `cluster` that should take the next stream, skipping those in `exclude`. */
  pick(cluster: string, exclude: ReadonlySet<Tunnel>): Tunnel | undefined;
  /** Why pick() found none, in a sentence for an error page. */
  unavailableReason(cluster: string): string;
  /**
   * When pick() found none: resolves true when it may find one now (a tunnel of `cluster` was expected
   * to land and something changed), false when none is expected or `deadline` (ms since the epoch)
   * passed. Absent: the dispatcher never waits (one controller: a lost tunnel is 503 at once).
   */
  waitForTunnel?(cluster: string, deadline: number, gone?: ClientGone): Promise<boolean>;
}

/**
 * Calls `listener` once the client that is waiting has left (its connection closed); returns the
 * function that stops listening. A wait for a tunnel ends then: no one is left to answer.
 */
export type ClientGone = (listener: () => void) => () => void;

/** The longest a request waits in waitForTunnel for its cluster's tunnels to land elsewhere. */
export const TUNNEL_WAIT_MS = 5_000;

/** What a stream opened to a peer controller carries: the cluster, and the open metadata for the agent. */
export interface PeerStreamMeta {
  readonly cluster: string;
  readonly forwarded: StreamMeta;
}

/** A stream to the cluster, on the tunnel that carries it. */
export interface Opened {
  readonly tunnel: Tunnel;
  readonly stream: Stream;
  /**
   * The SLUICE_ERR_* code of the last tunnel that was chosen before this one but could not open a
   * stream; undefined when there was none (the usual case).
   */
  readonly skipped: SluiceErrorCode | undefined;
}

/** No stream could be had, and why. */
export interface Unavailable {
  readonly tunnel: undefined;
  readonly stream: undefined;
  /**
   * `none-left`: no tunnel was left to choose (none is up, every one is draining or excluded, or the
   * attempts are used up). `open-failed`: the last tunnel chosen could not open a stream (closed,
   * draining or at a limit since it was chosen).
   */
  readonly cause: 'none-left' | 'open-failed';
  /** For the refusal page. */
  readonly reason: string;
  /** For the log line. */
  readonly detail: string;
  /** The SLUICE_ERR_* code of the failed open, for `open-failed` when it had one. */
  readonly code: SluiceErrorCode | undefined;
}

export interface OpenOptions {
  /**
   * The tunnels this request has tried, which are not chosen again. open() adds every tunnel it tries,
   * and chooses none once MAX_ATTEMPTS are in it.
   */
  readonly exclude: Set<Tunnel>;
}

/** What a front end runs on each stream dispatch() opens, and how it reads the result. */
export interface DispatchHandler<R> {
  /** Carries the exchange on `opened.stream`. */
  run(opened: Opened): Promise<R>;
  /**
   * True when the far end refused the stream of `result` before acting on it (and the front end can
   * send the exchange again): the next tunnel is tried.
   */
  refusedUnprocessed(result: R): boolean;
  /** The result to give when no stream could be had, and no refused result is the last word. */
  unavailable(why: Unavailable): R;
}

export class ClusterDispatcher {
  readonly #source: TunnelSource;

  constructor(source: TunnelSource) {
    this.#source = source;
  }

  /**
   * A stream to `cluster` on a tunnel not in `options.exclude`, with `meta` as its open metadata. A
   * chosen tunnel that cannot open one (its session closed, began draining, or is at its stream or
   * pending-open limit) is skipped for the next.
   */
  open(cluster: string, meta: StreamMeta, options: OpenOptions): Opened | Unavailable {
    const { exclude } = options;
    let failed: Error | undefined;
    let code: SluiceErrorCode | undefined;
    while (exclude.size < MAX_ATTEMPTS) {
      const tunnel = this.#source.pick(cluster, exclude);
      if (tunnel === undefined) break;
      exclude.add(tunnel);
      try {
        // A peer controller relays the stream to its own tunnel of the cluster, which it reads from here.
        const opening =
          tunnel.peer === undefined ? meta : ({ cluster, forwarded: meta } satisfies PeerStreamMeta);
        return { tunnel, stream: tunnel.session.open(opening), skipped: code };
      } catch (err) {
        failed = err as Error;
        if (err instanceof SluiceError) code = err.code;
      }
    }
    if (failed !== undefined) {
      return {
        tunnel: undefined,
        stream: undefined,
        cause: 'open-failed',
        reason: 'no tunnel could take the request',
        detail: failed.message,
        code,
      };
    }
    return {
      tunnel: undefined,
      stream: undefined,
      cause: 'none-left',
      reason: this.#source.unavailableReason(cluster),
      detail: 'no live tunnel',
      code: undefined,
    };
  }

  /**
   * Opens a stream and runs `handler` on it, again on the next tunnel while the result says the stream
   * was refused unprocessed. The answer is the last thing that happened: a result, or why no (further)
   * stream could be opened; a refused result stands when simply no tunnel was left to try.
   */
  async dispatch<R>(
    cluster: string,
    meta: StreamMeta,
    handler: DispatchHandler<R>,
    gone?: ClientGone,
  ): Promise<R> {
    const exclude = new Set<Tunnel>();
    let refused: R | undefined;
    let deadline: number | undefined;
    for (;;) {
      const opened = this.open(cluster, meta, { exclude });
      if (opened.tunnel === undefined) {
        if (opened.cause === 'none-left' && exclude.size < MAX_ATTEMPTS && this.#source.waitForTunnel) {
          deadline ??= Date.now() + TUNNEL_WAIT_MS;
          if (await this.#source.waitForTunnel(cluster, deadline, gone)) continue;
        }
        if (refused !== undefined && opened.cause === 'none-left') return refused;
        return handler.unavailable(opened);
      }
      const result = await handler.run(opened);
      if (!handler.refusedUnprocessed(result)) return result;
      refused = result;
    }
  }
}
