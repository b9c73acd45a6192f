/**
 * Responses the gateway's server can write without going through `Headers` and streams: a
 * response made by {@link fieldsResponse} carries its header fields as name/value pairs (and,
 * when its whole body is known, the bytes) beside the `Response` object.
 *
 * Why: for the usual small proxied answer, filling a `Headers` (each name and value checked
 * again through WebIDL), iterating it back for the wire, and reading known bytes back through
 * `response.body` (a `ReadableStream` built on first access, a reader, a few promise turns)
 * were together ~10% of a request's CPU. The pairs were already parsed and checked strictly by
 * the upstream client (RFC 9112), so the server writes them directly.
 *
 * Any other consumer still sees an ordinary `Response`: the first read of `headers` builds them
 * from the pairs (in their current state, see {@link rewriteFields}), after which the pairs are
 * dropped and the `Headers` are the one truth.
 *
 * @module
 */

/** What travels beside a response. */
interface Parts {
  /** The whole body, when known. */
  bytes: Uint8Array | null;
  /** The fields as pairs, until `headers` was read; then null. */
  fields: [string, string][] | null;
}

/** The parts of responses made by {@link bytesResponse} (plain `Response`s). */
const parts = new WeakMap<Response, Parts>();

/** A `Response` whose `Headers` are built from its pairs only when someone reads them. */
class FieldsResponse extends Response {
  /** Its parts: a field, read without the WeakMap lookup a plain `Response` needs. */
  parts: Parts | undefined;

  /** A clone copies the internal header list: build it first. */
  override clone(): Response {
    void this.headers;
    return super.clone();
  }

  override get headers(): Headers {
    const headers = super.headers;
    const own = this.parts;
    if (own !== undefined && own.fields !== null) {
      const fields = own.fields;
      own.fields = null;
      for (const [name, value] of fields) headers.append(name, value);
    }
    return headers;
  }
}

/**
 * A `Response` with `fields` as its header fields (names and values already checked as a
 * strict HTTP/1.1 parser checks them) and `body`; a `Uint8Array` body is written by the
 * gateway's server with the head in one write.
 *
 * @example
 * ```ts
 * const response = fieldsResponse(new TextEncoder().encode("ok"), 200, "OK", [["x-a", "1"]]);
 * ```
 */
export function fieldsResponse(
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null,
  status: number,
  statusText: string,
  fields: [string, string][],
): Response {
  const response = new FieldsResponse(body, { status, statusText });
  response.parts = { bytes: body instanceof Uint8Array ? body : null, fields };
  return response;
}

/**
 * A `Response` with `bytes` as its whole body, which the gateway's server writes directly.
 *
 * @example
 * ```ts
 * const response = bytesResponse(new TextEncoder().encode("ok"), { status: 200 });
 * ```
 */
export function bytesResponse(bytes: Uint8Array<ArrayBuffer>, init: ResponseInit): Response {
  const response = new Response(bytes, init);
  parts.set(response, { bytes, fields: null });
  return response;
}

/**
 * The bytes of a response made by {@link fieldsResponse} or {@link bytesResponse}, while nobody
 * read its body; else null.
 */
export function bytesOf(response: Response): Uint8Array | null {
  const own = partsOf(response);
  return own === undefined || own.bytes === null || response.bodyUsed ? null : own.bytes;
}

/**
 * The fields of a response made by {@link fieldsResponse} as pairs, while nobody read its
 * `headers`; else null (read `response.headers`).
 */
export function fieldsOf(response: Response): [string, string][] | null {
  return partsOf(response)?.fields ?? null;
}

function partsOf(response: Response): Parts | undefined {
  return response instanceof FieldsResponse ? response.parts : parts.get(response);
}

/**
 * `fields` as `Headers` would yield them (WHATWG Fetch, "sort and combine"): names lower-cased
 * and sorted, repeated fields joined with `, ` except `set-cookie`, whose lines stay apart in
 * their order. The server writes either form the same way.
 */
export function sortAndCombine(fields: [string, string][]): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, value] of fields) out.push([name.toLowerCase(), value]);
  // Array.prototype.sort is stable: set-cookie lines keep their order.
  out.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  let kept = 0;
  for (let i = 0; i < out.length; i++) {
    const pair = out[i];
    const last = kept > 0 ? out[kept - 1] : null;
    if (last !== null && last[0] === pair[0] && pair[0] !== "set-cookie") {
      last[1] = `${last[1]}, ${pair[1]}`;
    } else {
      out[kept++] = pair;
    }
  }
  out.length = kept;
  return out;
}

/**
 * Replaces the pairs of a response made by {@link fieldsResponse} with `rewrite`'s result;
 * false (and nothing done) when its `headers` were read already or it has no pairs.
 */
export function rewriteFields(
  response: Response,
  rewrite: (fields: [string, string][]) => [string, string][],
): boolean {
  const own = partsOf(response);
  if (own === undefined || own.fields === null) return false;
  own.fields = rewrite(own.fields);
  return true;
}
