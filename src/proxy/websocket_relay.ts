/**
 * An upgraded WebSocket connection relayed both ways, byte for byte (nginx's and Envoy's
 * upgraded-connection mode), with what a gateway adds on top:
 *
 * - backpressure: each chunk read from one side is written to the other before the next read,
 *   so a slow reader slows its sender down through TCP and the gateway buffers one chunk
 *   (64 KiB) per direction, whatever the message size;
 * - frame boundaries followed ({@link FrameScanner}), so the gateway can send a close frame of
 *   its own (RFC 6455 §7.4.1 1001 "going away" on shutdown and on the idle timeout) between
 *   two frames, never inside one; after it, that direction's further frames are dropped (an
 *   endpoint sends nothing after its close frame, §5.5.1);
 * - an idle timeout: no bytes either way (pings and pongs count: they are what keeps a quiet
 *   connection alive through proxies) for `idleTimeoutMs` closes both sides with 1001;
 * - TCP ends mirrored: one side's FIN becomes a half-close towards the other, and both are
 *   closed once both ended or `closeTimeoutMs` after the first end or close frame the gateway
 *   sent. A side that goes away without a close frame is not papered over: the other side sees
 *   the connection end without one too (a browser reports 1006), as it would without a proxy.
 *
 * @module
 */
import { closeFrame, closeInfo, FrameScanner, OPCODE_CLOSE } from "./websocket_frames.ts";

/** One side of the relay: a byte stream. */
export interface RelayEnd {
  /** Reads into `buffer`; null at EOF. May throw on a reset. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes all of `bytes`; throws when the peer is gone. */
  write(bytes: Uint8Array): Promise<void>;
  /** Sends FIN (errors ignored). */
  closeWrite(): Promise<void>;
  /** Closes the socket. */
  close(): void;
}

/** How a session ended. */
export type SessionEnding =
  /** A close frame came from the client first. */
  | "client_closed"
  /** A close frame came from the upstream first. */
  | "upstream_closed"
  /** The client's connection ended with no close frame. */
  | "client_gone"
  /** The upstream's connection ended with no close frame (it died mid-session). */
  | "upstream_gone"
  /** The gateway closed it: nothing moved for `idleTimeoutMs`. */
  | "idle_timeout"
  /** The gateway closed it: shutdown. */
  | "shutdown"
  /** The gateway closed it: a frame broke the masking rule (RFC 6455 §5.1), 1002. */
  | "protocol_error";

/** What a finished session did. */
export interface SessionSummary {
  /** Bytes the client sent after the handshake. */
  bytesFromClient: number;
  /** Bytes the upstream sent after the handshake. */
  bytesFromUpstream: number;
  /** The code of the first close frame (either side's or the gateway's), or null. */
  closeCode: number | null;
  /** How it ended. */
  ending: SessionEnding;
}

/** Options of {@link relayWebSocket}. */
export interface RelayOptions {
  /** No bytes either way for this long: both sides get a 1001 close. */
  idleTimeoutMs: number;
  /** After a side ended or the gateway sent its close frames: how long the other may take. */
  closeTimeoutMs?: number;
  /** Monotonic clock, milliseconds. */
  now?: () => number;
}

/** A running relay. */
export interface RelaySession {
  /** Settles (never rejects) when both connections are closed. */
  readonly ended: Promise<SessionSummary>;
  /**
   * Sends both sides a close frame (at the next frame boundary of each direction), then closes
   * once both answered or `closeTimeoutMs` passed.
   */
  goAway(code: number, reason: string, ending: "idle_timeout" | "shutdown"): void;
}

/** Bytes read per direction at a time, and so buffered per direction at most. */
const CHUNK_BYTES = 64 * 1024;

/** One direction: frames from `source` to `sink`. */
interface Direction {
  readonly source: RelayEnd;
  readonly sink: RelayEnd;
  /** Frames the gateway writes towards `sink` must be masked (towards the upstream, §5.3). */
  readonly masked: boolean;
  readonly scanner: FrameScanner;
  bytes: number;
  /** A write towards `sink` is in progress. */
  writing: boolean;
  /** A close frame of the gateway's waits for the next frame boundary. */
  pending: Uint8Array | null;
  /** The gateway sent its close frame towards `sink`: `source`'s frames are dropped. */
  dropping: boolean;
  /** A close frame from `source` was seen (relayed, or the answer to the gateway's). */
  closeSeen: boolean;
  /** `source` ended (EOF, reset). */
  ended: boolean;
}

/**
 * Relays between the client and the upstream until both are closed.
 *
 * @param upstreamFirst bytes the upstream sent right after its 101 (frames already read)
 * @example
 * ```ts
 * const session = relayWebSocket(clientConnection, upstreamEnd, head.rest, { idleTimeoutMs: 300_000 });
 * server.onShutdown = () => session.goAway(1001, "going away", "shutdown");
 * const summary = await session.ended;
 * ```
 */
export function relayWebSocket(
  client: RelayEnd,
  upstream: RelayEnd,
  upstreamFirst: Uint8Array,
  options: RelayOptions,
): RelaySession {
  const now = options.now ?? (() => performance.now());
  const closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  const { idleTimeoutMs } = options;
  let lastActivityAt = now();
  let ending: SessionEnding | null = null;
  let closeCode: number | null = null;
  let goingAway = false;
  let finished = false;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let closeTimer: ReturnType<typeof setTimeout> | undefined;

  const direction = (source: RelayEnd, sink: RelayEnd, masked: boolean, from: SessionEnding) => {
    const dir: Direction = {
      source,
      sink,
      masked,
      // A client's frames must be masked, a server's must not be (RFC 6455 §5.1); frames the
      // gateway writes towards `sink` are masked exactly when the source's must be.
      scanner: new FrameScanner((frame) => {
        if (frame.opcode !== OPCODE_CLOSE) return;
        dir.closeSeen = true;
        if (closeCode === null) closeCode = closeInfo(frame.payload).code;
        ending ??= from;
        maybeFinish();
      }, masked),
      bytes: 0,
      writing: false,
      pending: null,
      dropping: false,
      closeSeen: false,
      ended: false,
    };
    return dir;
  };
  const fromClient = direction(client, upstream, true, "client_closed");
  const fromUpstream = direction(upstream, client, false, "upstream_closed");

  const finish = () => {
    if (finished) return;
    finished = true;
    clearTimeout(idleTimer);
    clearTimeout(closeTimer);
    for (const end of [client, upstream]) {
      try {
        end.close();
      } catch {
        // closed
      }
    }
  };
  const armCloseTimer = () => {
    if (closeTimer === undefined && !finished) closeTimer = setTimeout(finish, closeTimeoutMs);
  };
  const maybeFinish = () => {
    if (fromClient.ended && fromUpstream.ended) return finish();
    // After the gateway's own close frames: done once each side answered (or ended).
    if (
      goingAway && (fromClient.closeSeen || fromClient.ended) &&
      (fromUpstream.closeSeen || fromUpstream.ended)
    ) {
      finish();
    }
  };

  const flushPending = async (dir: Direction) => {
    const frame = dir.pending;
    if (frame === null) return;
    dir.pending = null;
    dir.dropping = true;
    dir.writing = true;
    try {
      await dir.sink.write(frame);
    } catch {
      // the sink is gone: its own direction sees that
    } finally {
      dir.writing = false;
    }
  };
  const sendClose = (dir: Direction, code: number, reason: string) => {
    // A close already went that way (relayed from the other side): a second one is not allowed.
    if (dir.dropping || dir.closeSeen || dir.ended || finished) return;
    dir.pending = closeFrame(code, reason, dir.masked);
    if (!dir.writing && dir.scanner.atBoundary) void flushPending(dir);
  };

  const relayChunk = async (dir: Direction, bytes: Uint8Array, length: number) => {
    lastActivityAt = now();
    dir.bytes += length;
    let at = 0;
    while (at < length) {
      if (dir.dropping) {
        // Still scanned: the peer's answer to the gateway's close frame ends the session.
        dir.scanner.scan(bytes, at, length, false);
        return;
      }
      const end = dir.scanner.scan(bytes, at, length, dir.pending !== null);
      if (end > at) {
        dir.writing = true;
        try {
          await dir.sink.write(bytes.subarray(at, end));
        } finally {
          dir.writing = false;
        }
        at = end;
      }
      if (dir.scanner.violation !== null) {
        await protocolError(dir, dir.scanner.violation);
        return;
      }
      if (dir.pending !== null && dir.scanner.atBoundary) await flushPending(dir);
    }
  };

  /**
   * `dir`'s source broke the masking rule: the gateway ends the session as the endpoint that
   * saw it must (RFC 6455 §7.1.7), 1002 to both sides; the bad frame is never passed on.
   */
  const protocolError = async (dir: Direction, what: string) => {
    if (closeCode === null) closeCode = 1002;
    ending = "protocol_error";
    goingAway = true;
    const other = dir === fromClient ? fromUpstream : fromClient;
    sendClose(other, 1002, what);
    if (!dir.dropping && !dir.closeSeen && !dir.scanner.violationSplit) {
      dir.pending = closeFrame(1002, "protocol error", dir.masked);
      await flushPending(dir);
    }
    dir.dropping = true;
    // Its answer is not waited for: a failed connection is closed (RFC 6455 §7.1.7).
    dir.closeSeen = true;
    armCloseTimer();
    maybeFinish();
  };

  const pump = async (dir: Direction, first: Uint8Array) => {
    try {
      if (first.length > 0) await relayChunk(dir, first, first.length);
      const buffer = new Uint8Array(CHUNK_BYTES);
      while (!finished) {
        const n = await dir.source.read(buffer);
        if (n === null) break;
        await relayChunk(dir, buffer, n);
      }
    } catch {
      // a reset on the source, or the sink went away: this direction is over
    }
    dir.ended = true;
    if (!finished) {
      ending ??= dir === fromClient ? "client_gone" : "upstream_gone";
      // The end passes on as a half-close; the other direction may still finish its frames.
      await dir.sink.closeWrite();
      armCloseTimer();
      maybeFinish();
    }
  };

  const checkIdle = () => {
    if (finished) return;
    const idleMs = now() - lastActivityAt;
    if (idleMs >= idleTimeoutMs) {
      session.goAway(1001, "idle timeout", "idle_timeout");
      return;
    }
    idleTimer = setTimeout(checkIdle, idleTimeoutMs - idleMs);
  };
  idleTimer = setTimeout(checkIdle, idleTimeoutMs);

  const session: RelaySession = {
    ended: Promise.all([
      pump(fromClient, new Uint8Array(0)),
      pump(fromUpstream, upstreamFirst),
    ]).then(() => {
      finish();
      return {
        bytesFromClient: fromClient.bytes,
        bytesFromUpstream: fromUpstream.bytes,
        closeCode,
        ending: ending ?? "client_gone",
      };
    }),
    goAway(code, reason, why) {
      if (goingAway || finished) return;
      goingAway = true;
      if (closeCode === null) {
        closeCode = code;
        ending = why;
      }
      sendClose(fromUpstream, code, reason);
      sendClose(fromClient, code, reason);
      armCloseTimer();
      maybeFinish();
    },
  };
  return session;
}
