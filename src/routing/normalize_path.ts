/**
 * Turns the raw request target into the path the gateway routes and forwards, so that what the
 * upstream receives, decoded the way common frameworks decode it, stays under the prefix the
 * gateway routed by.
 *
 * Three things upstreams do that a naive prefix match does not:
 * - resolve dot segments, plain or percent-encoded (`/a/../b`, `/a/%2e%2e/b`) and treat `\` as
 *   `/` (WHATWG URL parsing): resolved here with the WHATWG parser before any prefix is compared;
 * - strip `;` path parameters before resolving dot segments (Tomcat, Spring, Jetty: `/pub/..;/x`
 *   is `/x`): a dot segment with parameters is treated as the dot segment;
 * - decode `%2F` and `%5C` (many frameworks decode the whole path): the service's
 *   `escapedSlashes` policy decides, as Envoy's `path_with_escaped_slashes_action` does:
 *   `reject` (400), `decode` (decode, resolve, then route), or `keep` (forward as sent, for
 *   upstreams that keep encoded slashes inside IDs; a dot segment hidden behind an encoded slash,
 *   `..%2F`, is refused even then, since no ID legitimately needs it).
 *
 * `%25` followed by `2e`, `2f` or `5c` (a doubly-encoded dot or slash) is refused in every mode:
 * an upstream that decodes twice would otherwise see a traversal the gateway did not.
 *
 * @module
 */

/** What a service does with `%2F` / `%5C` in a path. */
export type EscapedSlashes = "reject" | "decode" | "keep";

/** The path and query of a request, split and normalised. */
export interface RequestTarget {
  /** Absolute path, dot segments resolved, percent-encoding otherwise kept as sent. */
  path: string;
  /** The query string including its leading `?`, or the empty string. */
  search: string;
  /** True when the raw path held `%2F` or `%5C` (the service's policy then decides). */
  escapedSlash: boolean;
}

const ESCAPED_SLASH = /%2f|%5c/i;
const DOUBLE_ENCODED = /%25(?:2e|2f|5c)/i;

/**
 * Splits an origin-form target into a normalised path and the query string. Encoded slashes
 * stay encoded here; {@link applyEscapedSlashes} decides about them once the owner is known.
 * Returns `{ error }` for a target no policy may forward.
 *
 * @example
 * ```ts
 * normalizeTarget("/api/users/../admin?x=1"); // { path: "/api/admin", search: "?x=1", escapedSlash: false }
 * normalizeTarget("/pub/..;/other");          // { path: "/other", ... }
 * ```
 */
export function normalizeTarget(target: string): RequestTarget | { error: string } {
  const queryStart = target.indexOf("?");
  const rawPath = queryStart < 0 ? target : target.slice(0, queryStart);
  const search = queryStart < 0 ? "" : target.slice(queryStart);
  if (!rawPath.startsWith("/")) return { error: "the request target is not an absolute path" };
  if (DOUBLE_ENCODED.test(rawPath)) {
    return { error: "the path holds a doubly-encoded dot or slash" };
  }
  return { path: resolvePath(rawPath), search, escapedSlash: ESCAPED_SLASH.test(rawPath) };
}

/**
 * Applies a service's `escapedSlashes` policy to a normalised path that holds `%2F`/`%5C`.
 * Returns `{ path }` to route and forward, or `{ error }` for a 400.
 *
 * @example
 * ```ts
 * applyEscapedSlashes("/files/a%2Fb", "keep");   // { path: "/files/a%2Fb" }
 * applyEscapedSlashes("/files/a%2Fb", "decode"); // { path: "/files/a/b" }
 * applyEscapedSlashes("/files/a%2Fb", "reject"); // { error: "encoded slash ..." }
 * ```
 */
export function applyEscapedSlashes(
  path: string,
  policy: EscapedSlashes,
): { path: string } | { error: string } {
  switch (policy) {
    case "reject":
      return { error: "encoded slash or backslash in the path (%2F or %5C)" };
    case "decode":
      return { path: resolvePath(path.replace(/%2f|%5c/gi, "/")) };
    case "keep":
      for (const segment of path.split("/")) {
        if (segment.split(/%2f|%5c/i).some(isDotSegment)) {
          return { error: "a dot segment behind an encoded slash in the path" };
        }
      }
      return { path };
  }
}

/** `.` or `..`, with `;` parameters and in any mix of plain and `%2e`. */
function isDotSegment(segment: string): boolean {
  const semicolon = segment.indexOf(";");
  const name = (semicolon < 0 ? segment : segment.slice(0, semicolon)).replace(/%2e/gi, ".");
  return name === "." || name === "..";
}

/** Dot segments (with their `;` parameters dropped) and `\` resolved by the WHATWG parser. */
function resolvePath(path: string): string {
  // The common case (no dot segment, escape or backslash possible) skips the URL parser.
  if (!path.includes("/.") && !path.includes("%") && !path.includes("\\")) return path;
  // "\" is "/" to the WHATWG parser (and to many upstreams): split segments the same way.
  let prepared = path.replaceAll("\\", "/");
  if (prepared.includes(";")) {
    prepared = prepared.split("/").map((segment) =>
      segment.includes(";") && isDotSegment(segment)
        ? segment.slice(0, segment.indexOf(";"))
        : segment
    ).join("/");
  }
  // A fixed, harmless origin: "http://n" + "//evil/x" still has host "n" and path "//evil/x".
  return new URL("http://n" + prepared).pathname;
}
