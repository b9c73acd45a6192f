/**
 * The request body idle bound for HTTP/2 streams (README, "TLS and HTTP/2"): hyper waits for a
 * stalled upload forever, so every body read through here is checked by the TLS server's one
 * coarse sweep, as the HTTP/1.1 server's sweep checks its connections' bodies. A read records
 * when it began (one clock read); no timer and no promise is made per chunk, so an upload of
 * many small DATA frames costs no more timers than one of a single frame.
 *
 * @module
 */
import { ClientError } from "../proxy/client_error.ts";

/** The bodies of one server's HTTP/2 requests being read. */
export interface BodyIdleWatch {
  /**
   * `body` read through; errors with `ClientError("request_timeout")` (the client's fault: the
   * request path answers 408 and no upstream is blamed) once a read waited `idleMs` for a chunk
   * (seen by the next {@link BodyIdleWatch.sweep}). Watched until it ends, fails or is
   * cancelled, or `until` settles (the exchange is over: a body nobody read to its end is not
   * kept).
   */
  bound(body: ReadableStream<Uint8Array>, until?: Promise<unknown>): ReadableStream<Uint8Array>;
  /** Errors every body whose outstanding read began `idleMs` or more ago on `now`'s clock. */
  sweep(): void;
  /** Bodies being read now. */
  size(): number;
}

interface Entry {
  /** A read is outstanding. */
  waiting: boolean;
  /** When that read began. */
  sinceMs: number;
  /** Errors the body. */
  fail(error: ClientError): void;
}

/**
 * Creates the watch; the server calls {@link BodyIdleWatch.sweep} from its sweep timer.
 *
 * @param idleMs how long a read may wait for a chunk (`bodyIdleTimeoutMs`)
 * @param now monotonic milliseconds
 * @example
 * ```ts
 * const uploads = createBodyIdleWatch(60_000, () => performance.now());
 * setInterval(() => uploads.sweep(), 1000);
 * const body = request.body === null ? null : uploads.bound(request.body, info.completed);
 * ```
 */
export function createBodyIdleWatch(idleMs: number, now: () => number): BodyIdleWatch {
  const entries = new Set<Entry>();
  return {
    bound(body, until) {
      const reader = body.getReader();
      let failed = false;
      let stream!: ReadableStreamDefaultController<Uint8Array>;
      const entry: Entry = {
        waiting: false,
        sinceMs: now(),
        fail(error) {
          failed = true;
          entries.delete(entry);
          stream.error(error);
          // Ends the outstanding read too, so the pull below returns.
          reader.cancel(error).catch(() => {});
        },
      };
      entries.add(entry);
      // Either way: a `finally` chain would leave an unhandled rejection when `until` rejects.
      const forget = () => entries.delete(entry);
      until?.then(forget, forget);
      return new ReadableStream<Uint8Array>({
        start(controller) {
          stream = controller;
        },
        async pull(controller) {
          entry.waiting = true;
          entry.sinceMs = now();
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (error) {
            entries.delete(entry);
            if (!failed) controller.error(error);
            return;
          } finally {
            entry.waiting = false;
          }
          if (failed) return;
          if (chunk.done) {
            entries.delete(entry);
            controller.close();
          } else {
            controller.enqueue(chunk.value);
          }
        },
        cancel(reason) {
          entries.delete(entry);
          return reader.cancel(reason);
        },
      });
    },
    sweep() {
      const time = now();
      for (const entry of entries) {
        if (entry.waiting && time - entry.sinceMs >= idleMs) {
          entry.fail(
            new ClientError("request_timeout", `the request body sent nothing for ${idleMs} ms`),
          );
        }
      }
    },
    size: () => entries.size,
  };
}
