/**
 * HTTP status ranges as the config writes them (`"500-599"`, `"502,503,504"`,
 * `"500-503,599"`), read once, when the config is parsed.
 *
 * @module
 */

/** An inclusive range of HTTP statuses. */
export interface StatusRange {
  /** Lowest status in the range. */
  from: number;
  /** Highest status in the range. */
  to: number;
}

/** The syntax {@link parseStatusRanges} reads: three-digit codes or ranges, comma-separated. */
export const STATUS_RANGES_PATTERN: RegExp =
  /^\s*\d{3}(\s*-\s*\d{3})?(\s*,\s*\d{3}(\s*-\s*\d{3})?)*\s*$/;

/**
 * Parses `"500-599"`, `"502,503,504"` or `"500-503,599"` into inclusive ranges. The syntax is
 * the schema's to check ({@link STATUS_RANGES_PATTERN}); a reversed range (`"599-500"`) is taken
 * as if written the right way round.
 *
 * @example
 * ```ts
 * parseStatusRanges("500-503,599"); // [{ from: 500, to: 503 }, { from: 599, to: 599 }]
 * ```
 */
export function parseStatusRanges(text: string): StatusRange[] {
  return text.split(",").map((part) => part.trim()).filter((part) => part !== "").map(
    (part) => {
      const [low, high = low] = part.split("-").map((value) => Number(value.trim()));
      return { from: Math.min(low, high), to: Math.max(low, high) };
    },
  );
}

/** True when `status` is in one of `ranges`. */
export function inStatusRanges(status: number, ranges: readonly StatusRange[]): boolean {
  for (const range of ranges) {
    if (status >= range.from && status <= range.to) return true;
  }
  return false;
}
