/**
 * Commits in a Deno KV file, read from its SQLite write-ahead log (https://sqlite.org/fileformat.html,
 * "The WAL File Format"): every KV write (a `set`, an atomic commit) is one SQLite transaction,
 * which appends its changed pages to the `-wal` file, the last frame marked as a commit. The
 * file's size alone does not count writes: a commit may append several pages, and after a
 * checkpoint SQLite writes the log again from its start, so the file stops growing while writes
 * go on. Counting commit frames, and noticing when the log was restarted, does.
 *
 * @module
 */

/** The write-ahead log's commits as it stands. */
export interface WalCommits {
  /** The log's salt: a new value each time SQLite restarts the log from its start. */
  salt: string;
  /** Commit frames in the log since that restart. */
  commits: number;
}

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;

/**
 * Reads `${path}-wal`: its salt and how many commits it holds since its last restart; null when
 * there is no log (yet).
 *
 * @example
 * ```ts
 * const before = walCommits("/tmp/bench/throughput.kv");
 * // ... traffic ...
 * const after = walCommits("/tmp/bench/throughput.kv");
 * const writes = commitsBetween(before, after); // null when the log restarted in between
 * ```
 */
export function walCommits(path: string): WalCommits | null {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(`${path}-wal`);
  } catch {
    return null;
  }
  if (bytes.length < WAL_HEADER_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pageBytes = view.getUint32(8) === 1 ? 65536 : view.getUint32(8);
  const salt1 = view.getUint32(16);
  const salt2 = view.getUint32(20);
  let commits = 0;
  // Frames belong to the current log while they carry its salt; those after the first that
  // does not are left over from before the restart.
  for (
    let at = WAL_HEADER_BYTES;
    at + FRAME_HEADER_BYTES + pageBytes <= bytes.length;
    at += FRAME_HEADER_BYTES + pageBytes
  ) {
    if (view.getUint32(at + 8) !== salt1 || view.getUint32(at + 12) !== salt2) break;
    // Non-zero "database size after commit": the transaction's last frame.
    if (view.getUint32(at + 4) !== 0) commits++;
  }
  return { salt: `${salt1}:${salt2}`, commits };
}

/**
 * Commits between two readings of one log; null when it cannot be told (no log, or the log
 * restarted in between, which loses the count of what came before the restart).
 */
export function commitsBetween(before: WalCommits | null, after: WalCommits | null): number | null {
  if (before === null || after === null || before.salt !== after.salt) return null;
  return after.commits - before.commits;
}
