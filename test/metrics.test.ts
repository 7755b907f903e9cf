// The metrics helpers: status classes as label values, which errors count as a stream's own, and that
// each controller's registry is its own, so that several in one process never share a series.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentMetrics } from '../src/agent/metrics.js';
import { ControllerMetrics } from '../src/controller/metrics.js';
import { TunnelRegistry } from '../src/controller/tunnels.js';
import {
  ProtocolError,
  SessionError,
  SluiceError,
  StreamResetError,
  streamErrorCode,
} from '../src/errors.js';
import { STATUS_CLASSES, statusClass } from '../src/metrics.js';
import { ErrorCode } from '../src/protocol/constants.js';

test('status classes', () => {
  const label = (status: number): string => STATUS_CLASSES[statusClass(status)]!;
  assert.deepEqual([0, 101, 200, 204, 304, 404, 499, 502, 599].map(label), [
    'none',
    '1xx',
    '2xx',
    '2xx',
    '3xx',
    '4xx',
    '4xx',
    '5xx',
    '5xx',
  ]);
  assert.equal(label(600), 'other');
  assert.equal(label(99), 'other');
});

test("a stream's own errors have a code; its session's do not", () => {
  assert.equal(
    streamErrorCode(new StreamResetError(ErrorCode.TARGET_DENIED, '', true)),
    'SLUICE_ERR_STREAM_RESET',
  );
  assert.equal(
    streamErrorCode(new StreamResetError(ErrorCode.REFUSED_STREAM, '', true)),
    'SLUICE_ERR_STREAM_REFUSED',
  );
  assert.equal(
    streamErrorCode(new SluiceError('SLUICE_ERR_OPEN_TIMEOUT', 'no ACK')),
    'SLUICE_ERR_OPEN_TIMEOUT',
  );
  assert.equal(streamErrorCode(new SessionError('SLUICE_ERR_PING_TIMEOUT', 'silent peer')), undefined);
  assert.equal(streamErrorCode(new ProtocolError('bad frame')), undefined);
  assert.equal(streamErrorCode(new Error('not ours')), undefined);
  assert.equal(streamErrorCode(undefined), undefined);
});

test('two controllers in one process keep their own series', async () => {
  const gauges = {
    tunnels: new TunnelRegistry(),
    clusters: () => ['c1'],
    upgradesOpen: () => 0,
    inFlight: () => 0,
  };
  const a = new ControllerMetrics(gauges);
  const b = new ControllerMetrics(gauges);
  const done = { kind: 'http', at: 0, requestId: 'r', method: 'GET', host: 'h', path: '/' } as const;
  a.requestDone({ ...done, route: 'app.test', cluster: 'c1', status: 200, bytesIn: 3, bytesOut: 5, ms: 2 });
  a.tunnelError(new SessionError('SLUICE_ERR_PING_TIMEOUT', 'silent peer'));
  const textA = await a.registry.metrics();
  const textB = await b.registry.metrics();
  assert.match(textA, /^sluice_requests_total\{cluster="c1",route="app.test",status="2xx"\} 1$/m);
  assert.match(textA, /^sluice_bytes_out_total\{cluster="c1"\} 5$/m);
  assert.match(textA, /^sluice_errors_total\{code="SLUICE_ERR_PING_TIMEOUT"\} 1$/m);
  assert.doesNotMatch(textB, /^sluice_requests_total\{/m);
  assert.doesNotMatch(textB, /^sluice_errors_total\{/m);
  // Both carry the process metrics, each in its own registry.
  assert.match(textA, /^process_cpu_user_seconds_total /m);
  assert.match(textB, /^process_cpu_user_seconds_total /m);
});

test("the agent's stream results", async () => {
  const metrics = new AgentMetrics(() => []);
  metrics.streamDone('http', 200, -1, undefined);
  metrics.streamDone('http', 0, ErrorCode.TARGET_UNREACHABLE, undefined);
  metrics.streamDone('http', 0, -1, new StreamResetError(ErrorCode.CANCEL, 'client left', true));
  metrics.streamDone('upgrade', 101, -1, new SessionError('SLUICE_ERR_TRANSPORT_CLOSED', 'gone'));
  const text = await metrics.registry.metrics();
  assert.match(text, /^sluice_agent_streams_total\{kind="http",result="2xx"\} 1$/m);
  assert.match(text, /^sluice_agent_streams_total\{kind="http",result="target_unreachable"\} 1$/m);
  assert.match(text, /^sluice_agent_streams_total\{kind="http",result="aborted"\} 1$/m);
  assert.match(text, /^sluice_agent_streams_total\{kind="upgrade",result="1xx"\} 1$/m);
  // The reset is the stream's own error; the transport's end is its tunnel's, counted when that closes.
  assert.match(text, /^sluice_agent_errors_total\{code="SLUICE_ERR_STREAM_RESET"\} 1$/m);
  assert.doesNotMatch(text, /SLUICE_ERR_TRANSPORT_CLOSED/);
  assert.match(text, /^sluice_agent_tunnels_up 0$/m);
});
