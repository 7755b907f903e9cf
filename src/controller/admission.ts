// Tunnel admission: how a transport the tunnel listener accepted becomes a tunnel of a cluster. Each
// step is a method of its own: authenticate (the brake on failed handshakes, then the token), admit
// (the controller is not stopping and the token still stands), register (into the registry, retiring
// the older generation of the same agent slot), and watch (the drain and the end of the tunnel).
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { SessionError, SluiceError } from '../errors.js';
import { readinessLogger } from '../logging.js';
import { ErrorCode } from '../protocol/constants.js';
import { hashToken } from '../store/model.js';
import type { AuthResult, Hello } from '../tunnel/handshake.js';
import type { SessionOptions } from '../tunnel/options.js';
import { Session } from '../tunnel/session.js';
import { parseSlotCaps, type TunnelSlotId } from '../tunnel/slot.js';
import type { Stream } from '../tunnel/stream.js';
import { CONTROL_KIND } from '../protocol/route-snapshot.js';
import type { ControlPlane } from './control.js';
import type { DiscoveredRoutes } from './discovered.js';
import { HandshakeBrake } from './handshake-brake.js';
import type { ControllerMetrics } from './metrics.js';
import type { Tunnel, TunnelRegistry } from './tunnels.js';
import { COMPACT_CAP, compactSynCodec } from '../proxy/compact.js';

export interface AdmissionOptions {
  /** The session options of every tunnel (config.tunnel). */
  session: SessionOptions;
  control: ControlPlane;
  registry: TunnelRegistry;
  metrics: ControllerMetrics;
  log: Logger;
  /** True once the controller is draining: tunnels that finish their handshake then are let go. */
  stopping: () => boolean;
  /** Takes the agents' route snapshots, and hears when a cluster's tunnels come and go. */
  discovered?: DiscoveredRoutes;
}

/** One handshake as it goes: what the steps learn of it. */
interface Candidate {
  /** The agent's address as the tunnel listener saw it, `host:port`. */
  readonly remote: string;
  /** Its host alone, which the brake keys by. */
  readonly address: string;
  /**
   * The session's own logger. Until the token is accepted it logs nothing: a failed handshake is
   * logged by #handshakeFailed, sampled per address, and the session's own lines would repeat each one.
   */
  readonly sessionLog: Logger;
  cluster: string | undefined;
  slot: TunnelSlotId | undefined;
  token: string;
  /** The brake let its token be checked: a failure from then on counts against the address. */
  admitted: boolean;
  /** Refused by the brake unchecked. */
  shed: boolean;
  /** Whether its refusal had a log line of its own; undefined until it was refused for its token. */
  logFailure: boolean | undefined;
}

export class TunnelAdmission {
  readonly #options: AdmissionOptions;
  /** Slows repeated failed handshakes from one address and samples their log lines. */
  readonly #brake: HandshakeBrake;

  constructor(options: AdmissionOptions) {
    this.#options = options;
    const { log } = options;
    this.#brake = new HandshakeBrake((r) =>
      log.warn(
        {
          event: 'tunnel-refusals',
          remote: r.address,
          failures: r.failures,
          shed: r.shed,
          intervalMs: r.intervalMs,
        },
        'more failed tunnel handshakes from this address, not logged one by one',
      ),
    );
  }

  /** Runs the handshake on a transport the tunnel listener accepted from `remote` (`host:port`). */
  accept(transport: Duplex, remote: string): void {
    const { log } = this.#options;
    const sessionLog = log.child({});
    sessionLog.level = 'silent';
    const candidate: Candidate = {
      remote,
      address: remote.slice(0, remote.lastIndexOf(':')),
      sessionLog,
      cluster: undefined,
      slot: undefined,
      token: '',
      admitted: false,
      shed: false,
      logFailure: undefined,
    };
    Session.accept(transport, {
      options: this.#options.session,
      logger: sessionLog,
      authenticate: (hello) => this.#authenticate(candidate, hello),
      caps: [COMPACT_CAP],
      synCodec: compactSynCodec,
      onStream: (stream) => this.#stream(candidate, stream),
    }).then(
      (session) => this.#admit(candidate, session),
      (err: Error) => this.#handshakeFailed(candidate, err),
    );
  }

  /**
   * A stream the agent opened: a control stream carrying a route snapshot (docs/protocol.md §12), once
   * the tunnel belongs to a cluster. Agents open no other kind.
   */
  #stream(candidate: Candidate, stream: Stream): void {
    const { discovered } = this.#options;
    if (stream.meta.kind === CONTROL_KIND && discovered !== undefined && candidate.cluster !== undefined) {
      discovered.handleStream(candidate.cluster, stream);
      return;
    }
    refuseStream(stream);
  }

  /** Stops the brake's timer. */
  close(): void {
    this.#brake.close();
  }

  /** The HELLO's token, checked after the brake has held or shed the handshake. */
  async #authenticate(candidate: Candidate, hello: Hello): Promise<AuthResult> {
    const { control, log, session } = this.#options;
    const brake = this.#brake;
    const { address, remote } = candidate;
    // The slot caps are for this side only: they are not offered back, so WELCOME does not carry them.
    candidate.slot = parseSlotCaps(hello.caps);
    const hold = brake.admit(address);
    if (hold === 'shed') {
      candidate.shed = true;
      return {
        ok: false,
        code: 'OVERLOAD',
        reason: 'too many failed handshakes from this address; retry later',
      };
    }
    candidate.admitted = true;
    // Within the handshake timeout, so that the answer is still awaited.
    if (hold > 0) await delay(Math.min(hold, session.handshakeTimeout / 2));
    const admission = control.admit(hello.token);
    candidate.token = hello.token;
    if (admission.ok) {
      candidate.sessionLog.level = log.level;
      brake.succeeded(address);
      candidate.cluster = admission.cluster;
      return { ok: true };
    }
    candidate.logFailure = brake.failed(address, true);
    if (candidate.logFailure) {
      const what = admission.code === 'FORBIDDEN' ? 'revoked token' : 'unknown token';
      log.warn(
        { remote, agent: hello.agent, replica: hello.replica, code: admission.code },
        `tunnel refused: ${what}`,
      );
    }
    return admission;
  }

  /** The session is open: it becomes a tunnel unless the controller is stopping or the token went. */
  #admit(candidate: Candidate, session: Session): void {
    if (this.#options.stopping()) {
      void session.close(0);
      return;
    }
    // The token may have been revoked while the handshake finished.
    if (this.#options.control.tokens.clusterFor(candidate.token) !== candidate.cluster) {
      const revoked = 'the agent token was revoked';
      session.destroy(new SessionError('SLUICE_ERR_TOKEN_REVOKED', revoked, ErrorCode.FORBIDDEN));
      return;
    }
    this.#register(candidate, session);
  }

  /** Adds the tunnel to its cluster, so that streams go to it from now on. */
  #register(candidate: Candidate, session: Session): void {
    const { registry, log } = this.#options;
    const { slot, remote } = candidate;
    const peer = session.peer!;
    const tunnel: Tunnel = {
      session,
      cluster: candidate.cluster!,
      agent: peer.agent,
      replica: peer.replica,
      ...(peer.version === undefined ? {} : { version: peer.version }),
      ...(slot === undefined ? {} : { slot }),
      since: Date.now(),
      tokenHash: hashToken(candidate.token),
      remote,
    };
    const replaced = registry.add(tunnel);
    const fields: TunnelFields = {
      cluster: tunnel.cluster,
      agent: peer.agent,
      replica: peer.replica,
      slot: slot?.index,
      generation: slot?.generation,
      remote,
      session: session.id,
    };
    readinessLogger(log).info(
      { event: 'tunnel-up', ...fields, tunnels: registry.count(tunnel.cluster) },
      'tunnel up',
    );
    if (replaced !== undefined) this.#retire(replaced, tunnel);
    this.#options.discovered?.tunnelUp(tunnel.cluster);
    this.#watch(tunnel, fields);
  }

  /** Logs the tunnel's drain, and takes it out of the registry when it ends. */
  #watch(tunnel: Tunnel, fields: TunnelFields): void {
    const { registry, metrics, log } = this.#options;
    const { session } = tunnel;
    session.on('goaway', (_code: number, reason: string) =>
      log.info(
        { event: 'tunnel-draining', ...fields, reason, streams: session.streamCount },
        'agent is draining the tunnel; it gets no new streams',
      ),
    );
    session.once('close', (err?: Error) => {
      registry.remove(tunnel);
      // A replaced tunnel left the registry earlier; its successor is counted, so nothing starts.
      if (registry.count(tunnel.cluster) === 0) this.#options.discovered?.tunnelsGone(tunnel.cluster);
      metrics.tunnelError(err);
      const code = err instanceof SluiceError ? err.code : undefined;
      log.info(
        {
          event: 'tunnel-down',
          ...fields,
          code,
          err: err?.message,
          tunnels: registry.count(tunnel.cluster),
          upForMs: Date.now() - tunnel.since,
        },
        'tunnel down',
      );
    });
  }

  /**
   * Closes a tunnel that a newer dial of the same agent slot replaced. It already left routing. Unless
   * it is draining, the agent gave it up, so nothing on it can finish: its streams fail now (502) rather
   * than at the ping timeout. A draining one (this side sent GO_AWAY, e.g. its stream ids ran out, and
   * the agent dialed its successor meanwhile) still carries streams both sides know about: it finishes
   * them and closes by itself. Done on a later turn, so that registering the new tunnel never waits on
   * tearing down the old.
   */
  #retire(old: Tunnel, by: Tunnel): void {
    const draining = old.session.draining;
    this.#options.log.info(
      {
        event: 'tunnel-replaced',
        cluster: old.cluster,
        agent: old.agent,
        replica: old.replica,
        slot: old.slot?.index,
        generation: old.slot?.generation,
        session: old.session.id,
        by: by.session.id,
        byGeneration: by.slot?.generation,
        streams: old.session.streamCount,
        draining,
      },
      'a newer tunnel of the same agent slot replaced this one',
    );
    if (draining) return;
    setImmediate(() =>
      old.session.destroy(
        new SessionError(
          'SLUICE_ERR_TUNNEL_REPLACED',
          `replaced by generation ${by.slot?.generation} of the same agent tunnel`,
        ),
      ),
    );
  }

  #handshakeFailed(candidate: Candidate, err: Error): void {
    this.#options.metrics.tunnelError(err);
    if (candidate.shed) return;
    // A refusal was counted when it was decided; any other failure (a timeout, a bad HELLO) is now.
    if (candidate.logFailure ?? this.#brake.failed(candidate.address, candidate.admitted)) {
      this.#options.log.info({ remote: candidate.remote, err: err.message }, 'tunnel handshake failed');
    }
  }
}

/** The fields of a tunnel's log lines. */
interface TunnelFields {
  cluster: string;
  agent: string;
  replica: string;
  slot: number | undefined;
  generation: number | undefined;
  remote: string;
  session: string;
}

/** Agents open no other streams towards the controller. */
function refuseStream(stream: Stream): void {
  stream.reset(ErrorCode.REFUSED_STREAM, 'the controller accepts no such stream');
}

/** A timer that does not keep the process up: a held handshake is nothing to wait for at exit. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
