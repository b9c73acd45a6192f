/**
 * The `fetch` client's response body as the gateway reads it: fetch's body stream read only
 * with BYOB reads into buffers this module owns, an idle guard, a cap on decoded bytes, and a
 * small body that came with its head handed over whole.
 *
 * Why BYOB: fetch's body is a byte stream with `autoAllocateChunkSize` 64 KiB, so every
 * default-reader read allocates a fresh 64 KiB `ArrayBuffer` (even the read that only learns
 * the end). Measured with Deno 2.9.6 against a ~100-byte answer at 32 in flight: ~150-230 us of
 * process CPU per request read that way, ~85-90 us with BYOB reads into a reused buffer. A
 * consumer that reads by default gets an exact-size copy of what was read into a pooled buffer.
 *
 * @module
 */
import { settlesAtOnce } from "../async/settles_at_once.ts";
import { watchIdle } from "./_idle_watch.ts";
import { classifyUpstreamFailure, UpstreamError } from "./upstream_client.ts";

/** The scratch buffer size: fetch hands out at most 64 KiB per read anyway. */
const SCRATCH_BYTES = 64 * 1024;
/** Scratch buffers kept for reuse (one per body being read by default; ~64 KiB each). */
const MAX_POOLED = 64;
const pool: ArrayBuffer[] = [];

function takeScratch(): ArrayBuffer {
  return pool.pop() ?? new ArrayBuffer(SCRATCH_BYTES);
}

function giveScratch(buffer: ArrayBuffer | null): void {
  if (
    buffer !== null && !buffer.detached && buffer.byteLength === SCRATCH_BYTES &&
    pool.length < MAX_POOLED
  ) {
    pool.push(buffer);
  }
}

type ByteRead = ReadableStreamReadResult<Uint8Array<ArrayBuffer>>;

/** A read of fetch's body already under way, with the reader it was made on. */
export interface FirstRead {
  /** The BYOB reader of fetch's body. */
  reader: ReadableStreamBYOBReader;
  /** Its first read; handed on before anything else. */
  read: Promise<ByteRead>;
}

/** What {@link fetchBody} watches and bounds. */
export interface FetchBodyOptions {
  /** A read outstanding this long with no bytes errors the body (`timeout`); unset: never. */
  idleTimeoutMs?: number;
  /**
   * More bytes than this (counted as handed on, so after fetch decoded them) error the body;
   * null: no cap. Past it the body errors; not reported to `onFailure` (the gateway's limit).
   */
  maxBytes: number | null;
  /** Names the cap in its error message (a config key), e.g. `maxDecodedBodyBytes`. */
  capName?: string;
  /** The attempt's signal: a failure after it aborted is the caller's, not reported. */
  signal: AbortSignal;
  /** Called once with a failure on the upstream's side (stall, reset). */
  onFailure?: (error: UpstreamError) => void;
  /** A read {@link readWhole} started that did not finish at once. */
  first?: FirstRead;
}

/**
 * Wraps fetch's response `body`: reads it BYOB only (into the consumer's view when it brings
 * one, else into a pooled buffer, handing on an exact-size copy), cuts it after
 * `idleTimeoutMs` without bytes while the consumer waits, and errors it past `maxBytes`.
 * Failures come out as `UpstreamError`s; cutting cancels fetch's body, which drops the
 * upstream connection.
 *
 * @example
 * ```ts
 * const body = fetchBody(response.body!, {
 *   idleTimeoutMs: 60_000,
 *   maxBytes: 100 * 1024 * 1024,
 *   signal,
 * });
 * ```
 */
export function fetchBody(
  body: ReadableStream<Uint8Array>,
  options: FetchBodyOptions,
): ReadableStream<Uint8Array> {
  const { idleTimeoutMs, maxBytes, signal, onFailure } = options;
  let reader: ReadableStreamBYOBReader | null = options.first?.reader ?? null;
  let firstRead: Promise<ByteRead> | null = options.first?.read ?? null;
  let scratch: ArrayBuffer | null = null;
  let handedOn = 0;
  let timedOut = false;
  // Cancelled by the consumer: a read still outstanding then ends with nothing to hand on.
  let cancelled = false;
  const watch = idleTimeoutMs === undefined ? null : watchIdle(idleTimeoutMs, () => {
    timedOut = true;
    reader?.cancel().catch(() => {});
  });
  let controller!: ReadableByteStreamController;
  const settle = () => {
    watch?.stop();
    giveScratch(scratch);
    scratch = null;
  };
  const fail = (error: UpstreamError) => {
    settle();
    if (error.kind !== "aborted" && !signal.aborted) onFailure?.(error);
    controller.error(error);
  };
  const timeout = () =>
    new UpstreamError("timeout", `no response body bytes for ${idleTimeoutMs} ms`);
  return new ReadableStream({
    type: "bytes",
    start(started: ReadableByteStreamController) {
      controller = started;
    },
    async pull(controller) {
      const request = controller.byobRequest;
      // The first read was made into a buffer of its own: enqueued, it fills a pending view.
      const view = firstRead === null ? request?.view ?? null : null;
      reader ??= body.getReader({ mode: "byob" });
      let read: Promise<ByteRead>;
      if (firstRead !== null) {
        read = firstRead;
        firstRead = null;
      } else if (view !== null) {
        // Into the consumer's own buffer when it brought one, else into ours.
        read = reader.read(
          new Uint8Array(view.buffer as ArrayBuffer, view.byteOffset, view.byteLength),
        );
      } else {
        const buffer = scratch ?? takeScratch();
        scratch = null; // detached by the read: its result's view holds it next
        read = reader.read(new Uint8Array(buffer));
      }
      watch?.waiting();
      let result: ByteRead;
      try {
        result = await read;
      } catch (error) {
        if (cancelled) return;
        fail(timedOut ? timeout() : classifyUpstreamFailure(error, signal));
        return;
      }
      watch?.delivered();
      if (cancelled) return;
      if (timedOut) {
        fail(timeout());
        return;
      }
      const value = result.value;
      const ours = view === null && value !== undefined &&
        value.buffer.byteLength === SCRATCH_BYTES;
      if (ours) scratch = value.buffer;
      if (result.done) {
        settle();
        controller.close();
        // A pending BYOB request must be answered; a BYOB read returns its (empty) buffer.
        if (view !== null && value !== undefined) request!.respondWithNewView(value);
        else request?.respond(0);
        return;
      }
      handedOn += value!.length;
      if (maxBytes !== null && handedOn > maxBytes) {
        reader.cancel().catch(() => {});
        const name = options.capName ?? "maxBytes";
        // The gateway's own limit, not counted against the upstream: the client chose to have
        // fetch decode (Accept-Encoding), so a large but honest body would otherwise let any
        // client open the breaker by asking for it compressed.
        settle();
        controller.error(
          new UpstreamError("unreachable", `response body larger than ${name} (${maxBytes})`),
        );
        return;
      }
      if (view !== null) request!.respondWithNewView(value!);
      // An exact-size copy: cheaper than a fresh 64 KiB buffer per read for the usual answer.
      else controller.enqueue(ours ? value!.slice() : value!);
    },
    cancel(reason) {
      cancelled = true;
      settle();
      return (reader ?? body).cancel(reason);
    },
  }) as ReadableStream<Uint8Array>;
}

/**
 * Reads a body of `length` declared bytes whole if it is already here: the bytes when one read
 * within a turn of the event loop brought all of them (fetch's body is then cancelled, which
 * keeps the connection: hyper has read its length), else the read under way, for
 * {@link fetchBody} to hand on first. The head never waits longer than that turn.
 *
 * @example
 * ```ts
 * const whole = await readWhole(response.body!, 94);
 * if (whole instanceof Uint8Array) return fieldsResponse(whole, 200, "OK", fields);
 * ```
 */
export async function readWhole(
  body: ReadableStream<Uint8Array>,
  length: number,
): Promise<Uint8Array<ArrayBuffer> | FirstRead> {
  const reader = body.getReader({ mode: "byob" });
  const read = reader.read(new Uint8Array(length));
  if (await settlesAtOnce(read)) {
    let result: ByteRead | null = null;
    try {
      result = await read;
    } catch {
      // handed on as the stream's first read, which fails the same way
    }
    if (result !== null && !result.done && result.value.length === length) {
      reader.cancel().catch(() => {});
      return result.value;
    }
  }
  return { reader, read };
}
