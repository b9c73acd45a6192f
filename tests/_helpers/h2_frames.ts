/**
 * Raw HTTP/2 bytes for tests that speak to the TLS listener below any client library: the
 * connection preface, frames and literal HPACK field blocks, so a test can send what no
 * well-behaved client would (rapid resets, half-sent bodies, oversized header blocks).
 *
 * @module
 */

/** The client connection preface (RFC 9113 §3.4). */
export const H2_PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * An HTTP/2 frame (RFC 9113 §4.1): 24-bit length, type, flags, stream id, payload.
 *
 * @example
 * ```ts
 * const settings = h2Frame(0x4, 0, 0, new Uint8Array());
 * ```
 */
export function h2Frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >> 16;
  out[1] = (payload.length >> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, streamId);
  out.set(payload, 9);
  return out;
}

/** `parts` joined into one array (one write, so frames reach the peer together). */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * A field block of HPACK (RFC 7541 §6.2.2) literals without indexing and without Huffman:
 * a number name is the first byte as given (0x04 = static-table `:path`), a string name is
 * sent literally. Lengths must be under 127 (one-byte length prefixes).
 */
export function hpackLiterals(fields: [number | string, string][]): Uint8Array {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    const valueBytes = new TextEncoder().encode(value);
    if (typeof name === "number") bytes.push(name);
    else bytes.push(0x00, name.length, ...new TextEncoder().encode(name));
    bytes.push(valueBytes.length, ...valueBytes);
  }
  return new Uint8Array(bytes);
}
