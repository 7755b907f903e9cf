// Mirrors docs/protocol.md one to one. test/protocol/constants.test.ts pins every number here:
// changing one changes the wire, so change the spec first.

export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 12;

export const FrameType = {
  DATA: 0x0,
  WINDOW_UPDATE: 0x1,
  PING: 0x2,
  GO_AWAY: 0x3,
  SYN: 0x4,
  ACK: 0x5,
  RST: 0x6,
  HELLO: 0x7,
  WELCOME: 0x8,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const Flag = {
  FIN: 0x1,
  ACK: 0x2,
} as const;

export const ErrorCode = {
  NO_ERROR: 0x00,
  PROTOCOL_ERROR: 0x01,
  INTERNAL_ERROR: 0x02,
  FLOW_CONTROL_ERROR: 0x03,
  FRAME_SIZE_ERROR: 0x04,
  REFUSED_STREAM: 0x05,
  CANCEL: 0x06,
  OVERLOAD: 0x07,
  PING_TIMEOUT: 0x08,
  WRITE_TIMEOUT: 0x09,
  HANDSHAKE_TIMEOUT: 0x0a,
  UNAUTHORIZED: 0x0b,
  FORBIDDEN: 0x0c,
  VERSION_MISMATCH: 0x0d,
  TARGET_DENIED: 0x10,
  TARGET_UNREACHABLE: 0x11,
  TARGET_TIMEOUT: 0x12,
  TARGET_TLS: 0x13,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const CODE_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** The spec name of a wire error code; unknown codes print with their number. */
export function errorCodeName(code: number): string {
  return CODE_NAMES.get(code) ?? `UNKNOWN_0x${code.toString(16)}`;
}

export const Limits = {
  MAX_DATA_PAYLOAD: 16 * 1024 * 1024,
  MAX_SYN_PAYLOAD: 64 * 1024,
  MAX_HANDSHAKE_PAYLOAD: 16 * 1024,
  MAX_REASON_BYTES: 1024,
  MIN_WINDOW: 64 * 1024,
  MAX_WINDOW: 2 ** 31 - 1,
  MAX_STREAM_ID: 2 ** 32 - 1,
  WINDOW_UPDATE_PAYLOAD: 4,
  PING_PAYLOAD: 8,
  /** The longest an acceptor holds a stream's ACK back waiting for its first frame (§4). */
  MAX_ACK_DELAY_MS: 10,
} as const;

export const Defaults = {
  WINDOW: 4 * 1024 * 1024,
  MAX_FRAME_DATA: 64 * 1024,
  MAX_STREAMS: 65_536,
  MAX_PENDING_OPENS: 4_096,
  SESSION_BUFFER: 256 * 1024 * 1024,
  PING_INTERVAL_MS: 15_000,
  PING_TIMEOUT_MS: 45_000,
  WRITE_TIMEOUT_MS: 45_000,
  HANDSHAKE_TIMEOUT_MS: 10_000,
  OPEN_TIMEOUT_MS: 10_000,
  GRACE_PERIOD_MS: 30_000,
} as const;
