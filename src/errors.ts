// Every error Sluice raises carries a stable SLUICE_ERR_* code. docs/errors.md documents each one and
// test/errors.test.ts keeps the two in sync. An error that crosses the wire also carries the numeric
// code of docs/protocol.md §8 (`wireCode`).
import { ErrorCode, errorCodeName } from './protocol/constants.js';

export const ERROR_CODES = [
  'SLUICE_ERR_PROTOCOL',
  'SLUICE_ERR_FRAME_SIZE',
  'SLUICE_ERR_FLOW_CONTROL',
  'SLUICE_ERR_VERSION_MISMATCH',
  'SLUICE_ERR_UNAUTHORIZED',
  'SLUICE_ERR_FORBIDDEN',
  'SLUICE_ERR_HANDSHAKE_TIMEOUT',
  'SLUICE_ERR_PING_TIMEOUT',
  'SLUICE_ERR_WRITE_TIMEOUT',
  'SLUICE_ERR_TRANSPORT_CLOSED',
  'SLUICE_ERR_SESSION_CLOSED',
  'SLUICE_ERR_INTERNAL',
  'SLUICE_ERR_TOKEN_REVOKED',
  'SLUICE_ERR_TUNNEL_REPLACED',
  'SLUICE_ERR_SHUTDOWN',
  'SLUICE_ERR_GOING_AWAY',
  'SLUICE_ERR_STREAM_RESET',
  'SLUICE_ERR_STREAM_REFUSED',
  'SLUICE_ERR_TARGET_TLS',
  'SLUICE_ERR_OPEN_TIMEOUT',
  'SLUICE_ERR_TOO_MANY_STREAMS',
  'SLUICE_ERR_TOO_MANY_PENDING_OPENS',
  'SLUICE_ERR_OVERLOAD',
  'SLUICE_ERR_STREAM_IDS_EXHAUSTED',
  'SLUICE_ERR_INVALID_OPTION',
  'SLUICE_ERR_INVALID_URL',
  'SLUICE_ERR_TLS_CONFIG',
  'SLUICE_ERR_STORE_CONFLICT',
  'SLUICE_ERR_STORE_UNAVAILABLE',
] as const;
export type SluiceErrorCode = (typeof ERROR_CODES)[number];

/**
 * Why the controller's public edge answered a request itself, with an error page rather than the
 * target's response: `code` in the JSON page, `reasonCode` in the request's log line and RequestDone.
 * Stable like the SLUICE_ERR_* codes; docs/errors.md ("Refusal reason codes") says when each is sent.
 */
export const REASON_CODES = [
  'bad_request',
  'too_many_headers',
  'head_too_large',
  'request_timeout',
  'body_timeout',
  'too_many_requests',
  'no_route',
  'loop',
  'not_implemented',
  'no_tunnel',
  'agent_draining',
  'overloaded',
  'target_denied',
  'target_unreachable',
  'target_timeout',
  'target_tls',
  'timeout',
  'bad_response',
  'stream_broken',
  'internal',
] as const;
export type ReasonCode = (typeof REASON_CODES)[number];

export class SluiceError extends Error {
  readonly code: SluiceErrorCode;
  /** The wire code (docs/protocol.md §8) this error is sent or was received as, if any. */
  readonly wireCode: number | undefined;

  constructor(code: SluiceErrorCode, message: string, wireCode?: number, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SluiceError';
    this.code = code;
    this.wireCode = wireCode;
  }
}

/** The peer broke the protocol. The session answers with GO_AWAY(wireCode) and closes. */
export class ProtocolError extends SluiceError {
  constructor(
    message: string,
    wireCode: number = ErrorCode.PROTOCOL_ERROR,
    code: SluiceErrorCode = codeForWire(wireCode),
  ) {
    super(code, message, wireCode);
    this.name = 'ProtocolError';
  }
}

/** The peer reset a stream (RST) or refused to open it. */
export class StreamResetError extends SluiceError {
  readonly reason: string;
  constructor(wireCode: number, reason: string, remote: boolean) {
    const who = remote ? 'peer reset the stream' : 'stream reset';
    const code: SluiceErrorCode =
      wireCode === ErrorCode.REFUSED_STREAM
        ? 'SLUICE_ERR_STREAM_REFUSED'
        : wireCode === ErrorCode.OVERLOAD
          ? 'SLUICE_ERR_OVERLOAD'
          : wireCode === ErrorCode.TARGET_TLS
            ? 'SLUICE_ERR_TARGET_TLS'
            : 'SLUICE_ERR_STREAM_RESET';
    super(code, `${who}: ${errorCodeName(wireCode)}${reason ? ` (${reason})` : ''}`, wireCode);
    this.name = 'StreamResetError';
    this.reason = reason;
  }
}

/** The session ended: GO_AWAY with an error code, or a local failure such as a ping timeout. */
export class SessionError extends SluiceError {
  constructor(code: SluiceErrorCode, message: string, wireCode?: number, options?: ErrorOptions) {
    super(code, message, wireCode, options);
    this.name = 'SessionError';
  }
}

/** A bad option or config value, with the exact key at fault in the message. */
export class ConfigError extends SluiceError {
  readonly key: string;
  constructor(
    key: string,
    message: string,
    code: SluiceErrorCode = 'SLUICE_ERR_INVALID_OPTION',
    options?: ErrorOptions,
  ) {
    super(code, `${key} ${message}`, undefined, options);
    this.name = 'ConfigError';
    this.key = key;
  }
}

const WIRE_TO_CODE: Partial<Record<number, SluiceErrorCode>> = {
  [ErrorCode.PROTOCOL_ERROR]: 'SLUICE_ERR_PROTOCOL',
  [ErrorCode.FRAME_SIZE_ERROR]: 'SLUICE_ERR_FRAME_SIZE',
  [ErrorCode.FLOW_CONTROL_ERROR]: 'SLUICE_ERR_FLOW_CONTROL',
  [ErrorCode.VERSION_MISMATCH]: 'SLUICE_ERR_VERSION_MISMATCH',
  [ErrorCode.UNAUTHORIZED]: 'SLUICE_ERR_UNAUTHORIZED',
  [ErrorCode.FORBIDDEN]: 'SLUICE_ERR_FORBIDDEN',
  [ErrorCode.HANDSHAKE_TIMEOUT]: 'SLUICE_ERR_HANDSHAKE_TIMEOUT',
  [ErrorCode.PING_TIMEOUT]: 'SLUICE_ERR_PING_TIMEOUT',
  [ErrorCode.WRITE_TIMEOUT]: 'SLUICE_ERR_WRITE_TIMEOUT',
  [ErrorCode.OVERLOAD]: 'SLUICE_ERR_OVERLOAD',
  [ErrorCode.NO_ERROR]: 'SLUICE_ERR_GOING_AWAY',
  [ErrorCode.INTERNAL_ERROR]: 'SLUICE_ERR_INTERNAL',
};

/**
 * The SLUICE_ERR_* code a session-level wire code maps to. A code with no meaning for a session (an
 * unknown one, or one for streams only) is treated as INTERNAL_ERROR, as docs/protocol.md §8 says.
 */
export function codeForWire(wireCode: number): SluiceErrorCode {
  return WIRE_TO_CODE[wireCode] ?? 'SLUICE_ERR_INTERNAL';
}

/**
 * The code of an error that belongs to one stream alone: a reset, a refusal, an open timeout. A stream
 * that ends because its session did fails with the session's error, which is the session's to report
 * (once, when it closes), not once per stream it carried.
 */
export function streamErrorCode(err: unknown): SluiceErrorCode | undefined {
  if (!(err instanceof SluiceError) || err instanceof SessionError || err instanceof ProtocolError) {
    return undefined;
  }
  return err.code;
}
