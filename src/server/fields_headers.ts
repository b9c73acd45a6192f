/**
 * Request `Headers` that keep the parsed field lines as pairs until someone needs more than
 * `get` and `has`.
 *
 * Why: a proxied request reads a handful of fields by name (`host`, `content-length`,
 * `connection`, `x-request-id`) and forwards the rest as pairs. Filling a `Headers` converts and
 * checks every name and value again through WebIDL (~0.4 us for one field, ~2.6 us for eight,
 * Deno 2.9.6), and iterating it back sorts and combines them (~1.4 us even for one): work the
 * strict parser (RFC 9112) already did. {@link fieldsHeaders} answers `get`/`has` from the pairs
 * and hands the pairs to {@link headerFieldsOf}; any other use (iteration, `set`, `append`,
 * `delete`, `getSetCookie`, a copy) fills the real `Headers` once, in field order, after which
 * they are the one truth.
 *
 * @module
 */

import { TOKEN } from "./token.ts";

/** `Headers` backed by pairs until a method other than `get`/`has` is called. */
class FieldsHeaders extends Headers {
  /** The fields as parsed, until the `Headers` were filled; then null. */
  fields: [string, string][] | null;
  /** The lower-cased names of {@link fields}, made on the first lookup. */
  lowerNames: string[] | null = null;

  constructor(fields: [string, string][]) {
    super();
    this.fields = fields;
  }

  /** Fills the real `Headers` from the pairs (once). */
  fill(): void {
    const fields = this.fields;
    if (fields === null) return;
    this.fields = null;
    this.lowerNames = null;
    for (const [name, value] of fields) super.append(name, value);
  }

  /**
   * The value of `name` (any case) from the pairs: null when absent, undefined when `name` is
   * no token (the real `Headers` then answer, and throw).
   */
  private lookup(name: string): string | null | undefined {
    if (!TOKEN.test(name)) return undefined;
    const fields = this.fields!;
    let lower = this.lowerNames;
    if (lower === null) {
      lower = this.lowerNames = new Array(fields.length);
      for (let i = 0; i < fields.length; i++) lower[i] = fields[i][0].toLowerCase();
    }
    const wanted = name.toLowerCase();
    let value: string | null = null;
    for (let i = 0; i < lower.length; i++) {
      if (lower[i] !== wanted) continue;
      // Repeated lines read as one value joined by ", " (WHATWG Fetch "get"), set-cookie too.
      value = value === null ? fields[i][1] : `${value}, ${fields[i][1]}`;
    }
    return value;
  }

  override get(name: string): string | null {
    if (this.fields !== null) {
      const value = this.lookup(name);
      if (value !== undefined) return value;
      this.fill();
    }
    return super.get(name);
  }

  override has(name: string): boolean {
    if (this.fields !== null) {
      const value = this.lookup(name);
      if (value !== undefined) return value !== null;
      this.fill();
    }
    return super.has(name);
  }

  override append(name: string, value: string): void {
    this.fill();
    super.append(name, value);
  }

  override delete(name: string): void {
    this.fill();
    super.delete(name);
  }

  override set(name: string, value: string): void {
    this.fill();
    super.set(name, value);
  }

  override getSetCookie(): string[] {
    this.fill();
    return super.getSetCookie();
  }

  override forEach(
    callback: (value: string, key: string, parent: this) => void,
    thisArg?: unknown,
  ): void {
    this.fill();
    super.forEach(callback, thisArg);
  }

  override entries(): ReturnType<Headers["entries"]> {
    this.fill();
    return super.entries();
  }

  override keys(): ReturnType<Headers["keys"]> {
    this.fill();
    return super.keys();
  }

  override values(): ReturnType<Headers["keys"]> {
    this.fill();
    return super.values();
  }

  override [Symbol.iterator](): ReturnType<Headers["entries"]> {
    this.fill();
    return super[Symbol.iterator]();
  }
}

/**
 * `Headers` for `fields` (names and values already checked as a strict HTTP/1.1 parser checks
 * them) that are only filled when something beyond `get`/`has` is asked of them.
 *
 * @example
 * ```ts
 * const headers = fieldsHeaders([["Host", "example.com"], ["Accept", "*\/*"]]);
 * headers.get("host"); // "example.com", no `Headers` filled
 * ```
 */
export function fieldsHeaders(fields: [string, string][]): Headers {
  return new FieldsHeaders(fields);
}

/**
 * The field lines of headers made by {@link fieldsHeaders} as parsed (names as sent, in order),
 * while they were not filled; else null (iterate the `Headers`).
 */
export function headerFieldsOf(headers: Headers): [string, string][] | null {
  return headers instanceof FieldsHeaders ? headers.fields : null;
}
