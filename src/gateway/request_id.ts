/**
 * Request ids for `X-Request-Id`: the client's when valid, else a generated one.
 *
 * Generated ids keep the shape of a UUID (36 characters, lower-case hex and dashes, version 4
 * and variant bits set) so log pipelines that expect one keep working, but cost a counter
 * increment instead of a `crypto.randomUUID()` call per request: 80 random bits drawn per block
 * of 2^16 ids, then a 48-bit counter. Ids are unique per process and across processes with
 * overwhelming probability (the random part); they are correlation handles, not secrets.
 *
 * @module
 */

/** Longest client id kept (longer ones are replaced). */
export const REQUEST_ID_MAX_LENGTH = 128;

/** Characters of a client id that is kept: Hono's `requestId` middleware's rule. */
const INVALID = /[^\w\-=]/;

/** The client's `X-Request-Id` if it may be kept, else null. */
export function validRequestId(value: string | null | undefined): string | null {
  if (!value || value.length > REQUEST_ID_MAX_LENGTH || INVALID.test(value)) return null;
  return value;
}

const BLOCK = 0x10000;

function hex(bytes: Uint8Array, from: number, to: number): string {
  let out = "";
  for (let i = from; i < to; i++) out += bytes[i].toString(16).padStart(2, "0");
  return out;
}

/**
 * Creates a generator of UUID-shaped request ids.
 *
 * @param random fills a byte array with random bytes (default `crypto.getRandomValues`)
 * @example
 * ```ts
 * const nextId = requestIdGenerator();
 * nextId(); // "3f1c2a9e-55b4-4c1b-9a57-000000000001"
 * ```
 */
export function requestIdGenerator(
  random: (bytes: Uint8Array) => void = (bytes) => crypto.getRandomValues(bytes),
): () => string {
  let prefix = "";
  let counter = 0;
  let left = 0;
  const bytes = new Uint8Array(10);
  const refill = () => {
    random(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4 (RFC 9562 §5.4)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10
    prefix = `${hex(bytes, 0, 4)}-${hex(bytes, 4, 6)}-${hex(bytes, 6, 8)}-${hex(bytes, 8, 10)}-`;
    left = BLOCK;
  };
  return () => {
    if (left === 0) refill();
    left--;
    counter = (counter + 1) % 0x1000000000000;
    return prefix + counter.toString(16).padStart(12, "0");
  };
}
