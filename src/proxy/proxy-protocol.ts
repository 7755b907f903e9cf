// The PROXY protocol version 2 header (HAProxy's proxy-protocol.txt, section 2.2): what the agent writes
// to a TCP route's target before the client's first byte, so that the target sees the public client's
// address instead of the agent's. Binary only: v2 is what PostgreSQL poolers, HAProxy, nginx and
// Envoy all read, and its fixed layout needs no parsing of text on the far side.
import { isIPv4, isIPv6 } from 'node:net';

/** The 12-byte signature every v2 header starts with: \r\n\r\n\0\r\nQUIT\n. */
export const PROXY_V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

/** Version 2 in the high nibble; the command in the low one. */
const LOCAL = 0x20;
const PROXY = 0x21;
/** Address family in the high nibble (1 IPv4, 2 IPv6), transport in the low one (1 STREAM). */
const TCP4 = 0x11;
const TCP6 = 0x21;
const UNSPEC = 0x00;

export interface ProxyEndpoints {
  /** The client's address and port, as the public listener saw them. */
  sourceAddress: string;
  sourcePort: number;
  /** The listener's own address and port for that connection. */
  destinationAddress: string;
  destinationPort: number;
}

/**
 * The v2 header for a TCP connection between `endpoints`: PROXY over TCP4 or TCP6. LOCAL (the target
 * uses the connection's own addresses) when the endpoints are unknown, or are not both IPv4 or both
 * IPv6 after IPv4-mapped IPv6 addresses are read as IPv4.
 */
export function encodeProxyV2(endpoints: ProxyEndpoints | undefined): Buffer {
  if (endpoints === undefined) return local();
  const source = unmap(endpoints.sourceAddress);
  const destination = unmap(endpoints.destinationAddress);
  if (isIPv4(source) && isIPv4(destination)) {
    const header = start(PROXY, TCP4, 12);
    writeIPv4(header, 16, source);
    writeIPv4(header, 20, destination);
    header.writeUInt16BE(endpoints.sourcePort, 24);
    header.writeUInt16BE(endpoints.destinationPort, 26);
    return header;
  }
  if (isIPv6(source) && isIPv6(destination)) {
    const header = start(PROXY, TCP6, 36);
    writeIPv6(header, 16, source);
    writeIPv6(header, 32, destination);
    header.writeUInt16BE(endpoints.sourcePort, 48);
    header.writeUInt16BE(endpoints.destinationPort, 50);
    return header;
  }
  return local();
}

function local(): Buffer {
  return start(LOCAL, UNSPEC, 0);
}

/** Signature, version and command, family and transport, and the length of what follows. */
function start(command: number, family: number, length: number): Buffer {
  const header = Buffer.alloc(16 + length);
  PROXY_V2_SIGNATURE.copy(header, 0);
  header[12] = command;
  header[13] = family;
  header.writeUInt16BE(length, 14);
  return header;
}

function unmap(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && isIPv4(lower.slice(7)) ? lower.slice(7) : address;
}

function writeIPv4(into: Buffer, offset: number, address: string): void {
  const parts = address.split('.');
  for (let i = 0; i < 4; i++) into[offset + i] = Number(parts[i]);
}

/** The 16 bytes of an IPv6 address, `::` expanded and a dotted IPv4 tail read as two groups. */
function writeIPv6(into: Buffer, offset: number, address: string): void {
  const zone = address.indexOf('%');
  const bare = zone === -1 ? address : address.slice(0, zone);
  const [head = '', tail] = bare.split('::');
  const groups = (text: string): number[] => {
    if (text === '') return [];
    const out: number[] = [];
    for (const part of text.split(':')) {
      if (part.includes('.')) {
        const b = part.split('.').map(Number);
        out.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
      } else out.push(parseInt(part, 16));
    }
    return out;
  };
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  for (let i = 0; i < 8; i++) into.writeUInt16BE(all[i]!, offset + 2 * i);
}
