// h2load (nghttp2) as the HTTP/2 load generator of the TLS paths (issue #14): small GETs for a
// duration on C connections with 10 streams each in flight, and one large download on one stream.
// The TLS paths pick h2 by ALPN; h2load sends :authority bench.test, which Sluice routes on.
import { BENCH_HOST, HOST } from './common.js';
import { binaryOnPath, runTool } from './ports.js';

/** Streams in flight per connection (`-m`), as the issue's `h2load -m 10`. */
export const H2_STREAMS = 10;

export function h2loadBinary(): string | null {
  return binaryOnPath('h2load');
}

export interface H2Result {
  rps: number;
  /** h2load gives min, max, mean and sd of "time for request", no percentiles. */
  meanMs: number;
  requests: number;
  succeeded: number;
  /** Failed, errored and timed-out requests, and answers that were not 2xx. */
  bad: number;
  /** The body bytes received ("data" in the traffic line). */
  dataBytes: number;
  /** From h2load's "finished in". */
  seconds: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 };

function duration(value: string, unit: string): number {
  return Number(value) * UNIT_MS[unit]!;
}

export function parseH2load(text: string): H2Result {
  const finished = /^finished in ([\d.]+)(us|ms|s), ([\d.]+) req\/s/m.exec(text);
  const requests =
    /^requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m.exec(
      text,
    );
  const codes = /^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m.exec(text);
  const data = /^traffic: .*, [\d.]+[KMG]?B \((\d+)\) data/m.exec(text);
  const time = /^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/m.exec(text);
  if (finished === null || requests === null || codes === null || data === null || time === null)
    throw new Error(`h2load report not understood:\n${text.slice(-3000)}`);
  const n = (m: RegExpExecArray, i: number) => Number(m[i]);
  return {
    rps: Number(finished[3]),
    meanMs: duration(time[5]!, time[6]!),
    requests: n(requests, 1),
    succeeded: n(requests, 2),
    bad: n(requests, 3) + n(requests, 4) + n(requests, 5) + n(codes, 2) + n(codes, 3) + n(codes, 4),
    dataBytes: n(data, 1),
    seconds: duration(finished[1]!, finished[2]!) / 1000,
  };
}

function binary(): string {
  const file = h2loadBinary();
  if (file === null) throw new Error('h2load not found (apt-get install nghttp2-client)');
  return file;
}

const authority = ['-H', `:authority: ${BENCH_HOST}`];

/**
 * The requests a run of about `seconds` takes at `rps` (req/s of an earlier run on the same path), at
 * least 5 per stream slot, so that every connection's 10 streams make a few rounds each.
 */
export function requestsFor(rps: number, seconds: number, connections: number): number {
  const floor = connections * H2_STREAMS * 5;
  return Math.max(floor, Math.round(rps * seconds));
}

/**
 * `h2load -n N -c C -m 10` on GET /small: N requests spread over C connections, each with 10 streams in
 * flight. By count, not by duration (`-D`): h2load 1.52's timing mode never exits when a client's TLS
 * handshake completes after the duration is over, since the stop at the deadline reaches only the
 * clients whose session is up, and the late one then sends requests for ever. Sluice's controller
 * does its handshakes on its one event loop, between the requests of the clients already connected, so
 * the last of 100 handshakes can take seconds on this 2-core machine. By count, a late client does its
 * share and h2load ends; req/s is over the whole run, its handshakes included.
 */
export async function runH2load(
  port: number,
  connections: number,
  requests: number,
  limitMs: number,
): Promise<H2Result> {
  const args = [
    '-n',
    String(requests),
    '-c',
    String(connections),
    '-m',
    String(H2_STREAMS),
    ...authority,
    `https://${HOST}:${port}/small`,
  ];
  return parseH2load(await runTool('h2load', binary(), args, limitMs));
}

/** One GET /bytes?n=N on one stream; h2load's default windows (2^30 - 1) keep flow control out of it. */
export async function runH2Download(port: number, bytes: number, limitMs: number): Promise<H2Result> {
  const args = ['-n', '1', '-c', '1', '-m', '1', ...authority, `https://${HOST}:${port}/bytes?n=${bytes}`];
  const r = parseH2load(await runTool('h2load', binary(), args, limitMs));
  if (r.succeeded !== 1 || r.dataBytes !== bytes)
    throw new Error(`h2load download: ${r.succeeded} of 1 succeeded, ${r.dataBytes} of ${bytes} bytes`);
  return r;
}
