// What the agent side's delivery (deliver.ts, deliver-upgrade.ts) asks of the agent and tells it,
// declared apart from both files so that each can name it without importing the other, and so that the
// delivery depends on this narrow contract rather than on the agent's policy class (agent/policy.ts).

/** The agent's verdict on a stream's target, asked before anything is dialed. */
export interface TargetCheck {
  /** Whether the agent may dial `target` (`http://`, `https://` or `h2c://host[:port]`, or `tcp://host:port`); a refusal says why, for the log. */
  check(target: string): TargetVerdict;
}

/** What the agent speaks to a target: HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 cleartext, or raw TCP. */
export type TargetScheme = 'http' | 'https' | 'h2c' | 'tcp';

export type TargetVerdict =
  | {
      ok: true;
      scheme: TargetScheme;
      /** The host to dial: lowercase, IPv6 without brackets, a trailing dot kept. */
      host: string;
      port: number;
      /** A protected target that a pattern named exactly: the dialer skips the resolved-address check. */
      exempt: boolean;
      /**
       * Only a wildcard allowed it: the resolved addresses must not be local either (see
       * forbidsWildcardAddress), or `*.internal` would reach 127.0.0.1 through a name.
       */
      viaWildcard: boolean;
    }
  | { ok: false; reason: string };

/** Told once of every stream this agent served, when it is over: for metrics. */
export interface DeliverObserver {
  /**
   * `status`: the target's answer (101 for a switched upgrade), 0 when none came. `reset`: the wire code
   * this agent reset the stream with, or -1. `err`: the error the stream failed with, if it did.
   */
  streamDone(kind: 'http' | 'upgrade' | 'tcp', status: number, reset: number, err: Error | undefined): void;
}
