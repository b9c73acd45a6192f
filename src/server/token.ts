/**
 * The `token` of HTTP's grammar (RFC 9110 §5.6.2): one or more `tchar`, the visible ASCII
 * characters except the delimiters `"(),/:;<=>?@[\]{}`. Methods (§9.1), field names (§5.1) and
 * connection options (§7.6.1) are tokens; the server, the upstream clients, the edge checks and
 * the config all test against this one definition so they cannot drift apart.
 *
 * @module
 */

/**
 * A whole string that is a token (no `g` flag: `test` keeps no state, so it is safe to share).
 *
 * @example
 * ```ts
 * TOKEN.test("X-Request-Id"); // true
 * TOKEN.test("bad name"); // false
 * ```
 */
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
