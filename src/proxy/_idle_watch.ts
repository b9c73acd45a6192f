/**
 * Idle detection for streamed response bodies: one coarse timer for every watched body, and a
 * counter bump per read instead of a timer (or even a clock read) per chunk.
 *
 * A body counts as idle only while its consumer is waiting for bytes: a consumer that stops
 * reading (a slow client) stalls the body through backpressure, which is not the upstream's
 * fault.
 *
 * @module
 */

/** Watches one body; call {@link IdleWatch.waiting} and {@link IdleWatch.delivered} per read. */
export interface IdleWatch {
  /** A read on the upstream is outstanding from now on. */
  waiting(): void;
  /** That read finished (bytes came, or the body ended or failed). */
  delivered(): void;
  /** Stops watching; `onIdle` will not be called after this. */
  stop(): void;
}

interface Entry {
  timeoutMs: number;
  onIdle: () => void;
  /** A read is outstanding. */
  waiting: boolean;
  /** Bumped by every `waiting()` and `delivered()`. */
  activity: number;
  /** `activity` as the last tick saw it. */
  seen: number;
  /** The first tick that saw the current `activity`, in `performance.now()` milliseconds. */
  sinceMs: number;
}

const entries = new Set<Entry>();
let timer: ReturnType<typeof setTimeout> | undefined;
let tickMs = Infinity;

/**
 * The tick for a timeout: an eighth of it, so a body is cut between `timeoutMs` and
 * `timeoutMs * 1.125` after its last byte, bounded to 5 ms..1 s.
 */
function resolutionOf(timeoutMs: number): number {
  return Math.min(1000, Math.max(5, Math.floor(timeoutMs / 8)));
}

function schedule(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  tickMs = Infinity;
  for (const entry of entries) tickMs = Math.min(tickMs, resolutionOf(entry.timeoutMs));
  if (tickMs === Infinity) return;
  const next = setTimeout(tick, tickMs);
  // The socket read the body waits on keeps the process alive; this timer need not.
  Deno.unrefTimer(next);
  timer = next;
}

function tick(): void {
  timer = undefined;
  const nowMs = performance.now();
  const idle: Entry[] = [];
  for (const entry of entries) {
    if (!entry.waiting || entry.activity !== entry.seen) {
      // Measured from this tick, not from the activity itself: a cut may come up to one tick
      // late, never early.
      entry.seen = entry.activity;
      entry.sinceMs = nowMs;
    } else if (nowMs - entry.sinceMs >= entry.timeoutMs) {
      idle.push(entry);
    }
  }
  for (const entry of idle) entries.delete(entry);
  schedule();
  for (const entry of idle) entry.onIdle();
}

/**
 * Starts watching a body: `onIdle` runs once when a read has been outstanding with no bytes for
 * `timeoutMs` (give or take an eighth).
 *
 * @example
 * ```ts
 * const watch = watchIdle(10_000, () => connection.destroy());
 * watch.waiting();
 * const bytes = await read();
 * watch.delivered();
 * ```
 */
export function watchIdle(timeoutMs: number, onIdle: () => void): IdleWatch {
  const entry: Entry = {
    timeoutMs,
    onIdle,
    waiting: false,
    activity: 0,
    seen: 0,
    sinceMs: performance.now(),
  };
  entries.add(entry);
  if (resolutionOf(timeoutMs) < tickMs) schedule();
  return {
    waiting() {
      entry.waiting = true;
      entry.activity++;
    },
    delivered() {
      entry.waiting = false;
      entry.activity++;
    },
    stop() {
      if (entries.delete(entry) && entries.size === 0) schedule();
    },
  };
}
