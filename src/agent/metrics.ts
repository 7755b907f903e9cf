// The agent's Prometheus metrics, served at `/metrics` on its health listener (docs/metrics.md). The
// delivery code tells of every stream once it is over (DeliverObserver); that is counted into plain
// numbers and published when a scrape asks. Tunnels, streams and ping round trips are read off the
// tunnel slots at that moment.
import { Counter, Gauge, type Registry } from 'prom-client';
import { SluiceError, streamErrorCode } from '../errors.js';
import { createMetricsRegistry, STATUS_CLASSES, statusClass } from '../metrics.js';
import { errorCodeName } from '../protocol/constants.js';
import type { DeliverObserver } from './deliver-types.js';
import type { Session } from '../tunnel/session.js';

/** One tunnel slot as the gauges read it. */
export interface SlotView {
  readonly index: number;
  /** Connected and not draining. */
  readonly up: boolean;
  /** The session that takes new streams, if any. */
  readonly session: Session | null;
  /** Every open session of the slot, draining ones included. */
  readonly sessions: ReadonlySet<Session>;
}

/** The `result` of a stream the agent reset before the target answered: its wire code, lower case. */
const resetResults = new Map<number, string>();

function resetResult(code: number): string {
  let result = resetResults.get(code);
  if (result === undefined) {
    result = errorCodeName(code).toLowerCase();
    resetResults.set(code, result);
  }
  return result;
}

export class AgentMetrics implements DeliverObserver {
  readonly registry: Registry = createMetricsRegistry();
  /** Streams served: kind → result → count. */
  readonly #streams = {
    http: new Map<string, number>(),
    upgrade: new Map<string, number>(),
    tcp: new Map<string, number>(),
  };
  readonly #errors: Counter<'code'>;
  /** With --discover: its conflict counts, read when scraped. */
  discovery: (() => { claimedTwice: number; refused: number }) | undefined;

  constructor(slots: () => readonly SlotView[]) {
    const registers = [this.registry];
    const streams = this.#streams;
    const discovery = (): { claimedTwice: number; refused: number } | undefined => this.discovery?.();
    new Counter({
      name: 'sluice_agent_discovery_conflicts_total',
      help:
        'With --discover, discovered routes in conflict, each counted when it first appears: claimed_twice ' +
        '(two objects claim one host and path; the older keeps it) or refused (by the controller).',
      labelNames: ['kind'] as const,
      registers,
      collect() {
        this.reset();
        const counts = discovery();
        if (counts === undefined) return;
        this.inc({ kind: 'claimed_twice' }, counts.claimedTwice);
        this.inc({ kind: 'refused' }, counts.refused);
      },
    });
    new Counter({
      name: 'sluice_agent_streams_total',
      help:
        "Streams served, by kind and result: the target's status class, the wire code this agent reset " +
        'the stream with before an answer (target_denied, target_unreachable, ...), or aborted.',
      labelNames: ['kind', 'result'] as const,
      registers,
      collect() {
        this.reset();
        for (const kind of ['http', 'upgrade', 'tcp'] as const) {
          for (const [result, n] of streams[kind]) this.inc({ kind, result }, n);
        }
      },
    });
    this.#errors = new Counter({
      name: 'sluice_agent_errors_total',
      help: 'Tunnel and stream errors by SLUICE_ERR_* code (docs/errors.md).',
      labelNames: ['code'] as const,
      registers,
    });
    new Gauge({
      name: 'sluice_agent_tunnels_up',
      help: 'Tunnels connected and taking streams (not draining).',
      registers,
      collect() {
        this.set(slots().reduce((n, slot) => n + (slot.up ? 1 : 0), 0));
      },
    });
    new Gauge({
      name: 'sluice_agent_streams_open',
      help: 'Streams open on all tunnels, draining ones included.',
      registers,
      collect() {
        let open = 0;
        for (const slot of slots()) for (const session of slot.sessions) open += session.streamCount;
        this.set(open);
      },
    });
    new Gauge({
      name: 'sluice_agent_tunnel_rtt_seconds',
      help: 'Last ping round trip of each tunnel, by slot (--tunnels N).',
      labelNames: ['tunnel'] as const,
      registers,
      collect() {
        this.reset();
        for (const slot of slots()) {
          const rtt = slot.session?.rttMs ?? -1;
          if (rtt >= 0) this.set({ tunnel: String(slot.index) }, rtt / 1000);
        }
      },
    });
  }

  streamDone(kind: 'http' | 'upgrade' | 'tcp', status: number, reset: number, err: Error | undefined): void {
    const result =
      status > 0 ? STATUS_CLASSES[statusClass(status)]! : reset >= 0 ? resetResult(reset) : 'aborted';
    const counts = this.#streams[kind];
    counts.set(result, (counts.get(result) ?? 0) + 1);
    const code = streamErrorCode(err);
    if (code !== undefined) this.#errors.inc({ code });
  }

  /** Counts the code of a tunnel that closed with an error or whose dial or handshake failed with one. */
  tunnelError(err: unknown): void {
    if (err instanceof SluiceError) this.#errors.inc({ code: err.code });
  }
}
