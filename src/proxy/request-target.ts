// The request path as the public edge accepts it. A route with a path prefix fences off part of a
// target only if no request routed under `/api` can be read by the target as a path above it, and
// targets read paths in many ways: Tomcat, Jetty and Spring drop `;` parameters from each segment
// (`..;` is `..`), some servers decode twice (`%252e` is `.`), old decoders accept overlong UTF-8
// (`%c0%ae` is `.`), C code stops at a NUL, Windows takes `\` for `/` and drops trailing spaces, and
// Unicode normalization turns `．` (U+FF0E) into `.`. So a path that any such reading would walk up
// with is refused (400) rather than normalized into something the client did not send; the path that
// is accepted goes on byte for byte. Pure: no I/O.
//
// RFC references: RFC 3986 §2.1 (percent-encoding), §3.3 (path segments), §5.2.4 (dot segments);
// RFC 9112 §3.2 (request-target: no fragment).

/** Decodings tried on top of the one every server does: `%252e` twice-encoded, `%25252e` thrice. */
const EXTRA_DECODINGS = 2;

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Why the path of a request-target is refused, or undefined when it is accepted. */
export function pathRefusal(target: string): string | undefined {
  const query = target.indexOf('?');
  const path = query < 0 ? target : target.slice(0, query);
  // Nothing that could be read as a dot segment, an encoding or a separator: the common case.
  if (!/[%.\\;#]/.test(path)) return undefined;
  if (path.includes('#')) return 'the request path has a fragment (#)';
  if (hasDotSegment(path)) return 'the request path has dot segments (/./ or /../)';
  if (!path.includes('%')) return undefined;
  const bytes = percentDecode(path, true);
  if (bytes === undefined) return 'the request path has a % that does not start a %XX escape';
  let decoded: string;
  try {
    decoded = STRICT_UTF8.decode(bytes);
  } catch {
    return 'the request path is not valid UTF-8 once decoded (overlong or broken %XX sequences)';
  }
  // Decoded once, as every target does; then again, as a target that decodes twice would.
  for (let level = 0; level <= EXTRA_DECODINGS; level++) {
    if (decoded.includes('\0')) return 'the request path has a NUL byte (%00)';
    if (hasDotSegment(decoded)) return 'the request path has encoded dot segments (/./ or /../)';
    if (!decoded.includes('%')) break;
    decoded = lenientUtf8(percentDecode(decoded, false)!);
  }
  return undefined;
}

/**
 * A segment is a dot segment when, with its `;` parameters dropped, trailing spaces removed and
 * Unicode compatibility forms folded, it is nothing but dots (`.`, `..`, and `...`, which old Windows
 * read as `../..`). `\` separates segments too, and so do a decoded `?` and `#`, for a target that
 * decodes the whole request-target before it looks for the query.
 */
function hasDotSegment(path: string): boolean {
  for (const raw of path.split(/[/\\?#]/)) {
    if (raw === '') continue;
    let segment = raw;
    const params = segment.indexOf(';');
    if (params >= 0) segment = segment.slice(0, params);
    // eslint-disable-next-line no-control-regex
    if (/[^\x00-\x7f]/.test(segment)) segment = segment.normalize('NFKC');
    segment = segment.replace(/[ \t]+$/, '');
    if (segment !== '' && /^\.+$/.test(segment)) return true;
  }
  return false;
}

/**
 * The bytes of `text` with %XX escapes decoded; other characters as their latin1 byte (a request line
 * holds only ASCII). With `strict`, a `%` that does not start an escape makes the result undefined;
 * otherwise it stays a `%`, as lenient decoders keep it, and IIS's `%uXXXX` is decoded as UTF-8.
 */
function percentDecode(text: string, strict: boolean): Uint8Array | undefined {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x25) {
      if (c < 0x80) out.push(c);
      else for (const b of Buffer.from(text[i]!, 'utf8')) out.push(b);
      continue;
    }
    const hex = /^[0-9a-fA-F]{2}/.exec(text.slice(i + 1, i + 3));
    if (hex !== null) {
      out.push(parseInt(hex[0], 16));
      i += 2;
      continue;
    }
    if (strict) return undefined;
    const wide = /^[uU]([0-9a-fA-F]{4})/.exec(text.slice(i + 1, i + 6));
    if (wide !== null) {
      for (const b of Buffer.from(String.fromCharCode(parseInt(wide[1]!, 16)), 'utf8')) out.push(b);
      i += 5;
      continue;
    }
    out.push(c);
  }
  return Uint8Array.from(out);
}

/**
 * UTF-8 as a lenient decoder reads it: an overlong form is taken for the character it spells
 * (`c0 ae` is `.`), which a strict decoder refuses. Bytes that start no sequence become U+FFFD.
 */
function lenientUtf8(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const length = b < 0x80 ? 1 : b >= 0xf0 && b < 0xf8 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 0;
    if (length === 1) {
      out += String.fromCharCode(b);
      continue;
    }
    let code = length === 0 ? -1 : b & (0xff >> (length + 1));
    for (let k = 1; k < length && code >= 0; k++) {
      const next = bytes[i + k];
      code = next !== undefined && (next & 0xc0) === 0x80 ? (code << 6) | (next & 0x3f) : -1;
    }
    if (code < 0 || code > 0x10ffff) {
      out += '\ufffd';
    } else {
      out += String.fromCodePoint(code);
      i += length - 1;
    }
  }
  return out;
}
