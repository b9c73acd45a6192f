/**
 * A WebSocket session where the gateway does not own the client's connection (embedded on
 * `Deno.serve`): the client side is a `WebSocket` from `Deno.upgradeWebSocket`, the upstream
 * side the raw connection the handshake was sent on. Messages cross over one by one, so unlike
 * the byte relay (`./websocket_relay.ts`) they are reassembled and re-framed here:
 *
 * - upstream to client: frames read (RFC 6455 §5.2) into one buffer that grows to fit the frame,
 *   fragments joined (at most `maxMessageBytes`, else both sides get 1009), text and binary
 *   sent on the `WebSocket` (a text message that is not UTF-8 fails the session: 1007, §8.1),
 *   waiting while its `bufferedAmount` is over 1 MiB (backpressure towards the upstream); pings
 *   answered by the gateway (the API cannot send a ping on);
 * - client to upstream: each message written as one masked frame (§5.3), in order; the
 *   `WebSocket` API has no way to pause a sender, so a client faster than its upstream is
 *   buffered in memory;
 * - close codes pass where the `WebSocket` API allows them (1000 and 3000-4999 towards the
 *   client; other codes from the upstream reach the client as 1000 with the reason kept);
 * - `idleTimeoutMs` without a message either way closes both sides (1001 to the upstream, 1000
 *   "idle timeout" to the client, the closest code the API lets a server send).
 *
 * @module
 */
import {
  closeFrame,
  closeInfo,
  encodeFrame,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
} from "./websocket_frames.ts";
import type { SessionEnding, SessionSummary } from "./websocket_relay.ts";

/** Options of {@link bridgeWebSocket}. */
export interface BridgeOptions {
  /** No message either way for this long closes both sides. */
  idleTimeoutMs: number;
  /** The largest message taken from the upstream. Default 64 MiB. */
  maxMessageBytes?: number;
  /** After a close: how long the other side may take. Default 5000. */
  closeTimeoutMs?: number;
  /** Monotonic clock, milliseconds. */
  now?: () => number;
}

const HIGH_WATER_BYTES = 1024 * 1024;
/** Room for one read of the upstream; the buffer grows past it only for a bigger frame. */
const READ_BYTES = 64 * 1024;
/** An empty buffer bigger than this (after a big frame) is dropped for a fresh `READ_BYTES`. */
const SHRINK_ABOVE_BYTES = 1024 * 1024;
const OPCODE_TEXT = 0x1;
// One of each per process, not per message: both are stateless between calls used like this.
const encoder = new TextEncoder();
// `fatal`: invalid UTF-8 throws instead of becoming U+FFFD, so it can fail the connection.
const decoder = new TextDecoder("utf-8", { fatal: true });
const INVALID_UTF8 = Symbol("invalid UTF-8");

/** The text of a text message's bytes, or {@link INVALID_UTF8}. */
function utf8(bytes: Uint8Array): string | typeof INVALID_UTF8 {
  try {
    return decoder.decode(bytes);
  } catch {
    return INVALID_UTF8;
  }
}

/**
 * Bridges `socket` (the client) and `conn` (the upstream, after its 101) until both closed.
 *
 * @example
 * ```ts
 * const { socket, response } = Deno.upgradeWebSocket(request);
 * const ended = bridgeWebSocket(socket, conn, head.rest, { idleTimeoutMs: 300_000 });
 * return response;
 * ```
 */
export function bridgeWebSocket(
  socket: WebSocket,
  conn: Deno.Conn,
  upstreamFirst: Uint8Array,
  options: BridgeOptions,
): Promise<SessionSummary> {
  const now = options.now ?? (() => performance.now());
  const maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
  const closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  let bytesFromClient = 0;
  let bytesFromUpstream = 0;
  let closeCode: number | null = null;
  let ending: SessionEnding | null = null;
  let lastActivityAt = now();
  let upstreamClosed = false;
  let closeSentUpstream = false;
  let writing = Promise.resolve();
  let closeTimer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const { promise: ended, resolve } = Promise.withResolvers<SessionSummary>();
  socket.binaryType = "arraybuffer";

  const { promise: upstreamClosedNow, resolve: markUpstreamClosed } = Promise.withResolvers<
    void
  >();
  const closeUpstream = () => {
    if (upstreamClosed) return;
    upstreamClosed = true;
    markUpstreamClosed();
    try {
      conn.close();
    } catch {
      // closed
    }
  };
  const closeClient = (code: number, reason: string) => {
    if (socket.readyState !== WebSocket.OPEN) return;
    const allowed = code === 1000 || (code >= 3000 && code <= 4999);
    try {
      socket.close(allowed ? code : 1000, reason);
    } catch {
      socket.close();
    }
  };
  const toUpstream = (frame: Uint8Array) => {
    writing = writing.then(async () => {
      if (upstreamClosed) return;
      let offset = 0;
      while (offset < frame.length) offset += await conn.write(frame.subarray(offset));
    }).catch(() => closeUpstream());
  };
  const sendCloseUpstream = (code: number | null, reason: string) => {
    if (closeSentUpstream || upstreamClosed) return;
    closeSentUpstream = true;
    // 1005 and 1006 are never sent (§7.4.1): an empty close frame says "no code".
    const empty = code === null || code === 1005 || code === 1006;
    toUpstream(
      empty ? encodeFrame(OPCODE_CLOSE, new Uint8Array(0), true) : closeFrame(code, reason, true),
    );
    closeTimer ??= setTimeout(closeUpstream, closeTimeoutMs);
  };

  socket.onmessage = (event) => {
    lastActivityAt = now();
    const payload = typeof event.data === "string"
      ? encoder.encode(event.data)
      : new Uint8Array(event.data as ArrayBuffer);
    bytesFromClient += payload.length;
    toUpstream(encodeFrame(typeof event.data === "string" ? 0x1 : 0x2, payload, true));
  };
  socket.onerror = () => {};
  socket.onclose = (event) => {
    clearTimeout(idleTimer);
    if (closeCode === null) closeCode = event.code;
    ending ??= event.wasClean ? "client_closed" : "client_gone";
    if (event.wasClean || event.code === 1000) sendCloseUpstream(event.code, event.reason);
    else closeUpstream();
    closeTimer ??= setTimeout(closeUpstream, closeTimeoutMs);
  };

  const checkIdle = () => {
    const idleMs = now() - lastActivityAt;
    if (idleMs < options.idleTimeoutMs) {
      idleTimer = setTimeout(checkIdle, options.idleTimeoutMs - idleMs);
      return;
    }
    if (closeCode === null) closeCode = 1001;
    ending ??= "idle_timeout";
    sendCloseUpstream(1001, "idle timeout");
    closeClient(1000, "idle timeout");
  };
  idleTimer = setTimeout(checkIdle, options.idleTimeoutMs);

  const readUpstream = async () => {
    // The client's socket opens once the host sent the 101; a message the upstream sends right
    // after its own 101 (a greeting) waits for that instead of being dropped as undeliverable.
    // The idle timeout's close ends the wait too, should the socket never open.
    if (socket.readyState === WebSocket.CONNECTING) {
      await Promise.race([
        upstreamClosedNow,
        new Promise((opened) => {
          socket.addEventListener("open", opened, { once: true });
          socket.addEventListener("close", opened, { once: true });
        }),
      ]);
    }
    // Unread upstream bytes are buf[start, end). Reads land in place and the buffer grows by
    // doubling to fit the frame being read, so a 64 MiB frame costs its bytes once, not one copy
    // of everything so far per 64 KiB read (quadratic).
    let buf = new Uint8Array(Math.max(READ_BYTES, upstreamFirst.length));
    buf.set(upstreamFirst);
    let start = 0;
    let end = upstreamFirst.length;
    /** Reads until `need` unread bytes are buffered; false at EOF first. */
    const fill = async (need: number): Promise<boolean> => {
      while (end - start < need) {
        if (buf.length - start < need || end === buf.length) {
          const unread = buf.subarray(start, end);
          if (buf.length >= need && unread.length < buf.length / 2) buf.copyWithin(0, start, end);
          else {
            const grown = new Uint8Array(Math.max(need, buf.length * 2));
            grown.set(unread);
            buf = grown;
          }
          end -= start;
          start = 0;
        }
        const n = await conn.read(buf.subarray(end));
        if (n === null) return false;
        bytesFromUpstream += n;
        end += n;
      }
      return true;
    };
    bytesFromUpstream += upstreamFirst.length;
    let message: Uint8Array[] = [];
    let messageBytes = 0;
    let messageOpcode = 0;
    while (true) {
      // After a big frame, give its buffer back rather than hold it for the whole session.
      if (start === end && buf.length > SHRINK_ABOVE_BYTES) {
        buf = new Uint8Array(READ_BYTES);
        start = end = 0;
      }
      // A whole frame: header (2-14 bytes), then the payload.
      if (!(await fill(2))) return;
      const lengthCode = buf[start + 1] & 0x7f;
      const headerBytes = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0);
      if (!(await fill(headerBytes))) return;
      const length = lengthCode === 126
        ? (buf[start + 2] << 8) | buf[start + 3]
        : lengthCode === 127
        ? Number(new DataView(buf.buffer, buf.byteOffset + start + 2, 8).getBigUint64(0))
        : lengthCode;
      if (messageBytes + length > maxMessageBytes) {
        closeCode ??= 1009;
        sendCloseUpstream(1009, "message too big");
        closeClient(1000, "message too big");
        return;
      }
      if (!(await fill(headerBytes + length))) return;
      const fin = (buf[start] & 0x80) !== 0;
      const opcode = buf[start] & 0x0f;
      // A copy: the buffer is read into again.
      const payload = buf.slice(start + headerBytes, start + headerBytes + length);
      start += headerBytes + length;
      lastActivityAt = now();
      if (opcode === OPCODE_PING) {
        toUpstream(encodeFrame(OPCODE_PONG, payload, true));
        continue;
      }
      if (opcode === OPCODE_PONG) continue;
      if (opcode === OPCODE_CLOSE) {
        const info = closeInfo(payload);
        if (closeCode === null) closeCode = info.code;
        ending ??= "upstream_closed";
        // The close handshake towards the upstream is answered here; the client gets its own.
        sendCloseUpstream(info.code, info.reason);
        closeClient(info.code ?? 1000, info.reason);
        continue;
      }
      if (opcode !== 0) messageOpcode = opcode;
      message.push(payload);
      messageBytes += payload.length;
      if (!fin) continue;
      const whole = message.length === 1 ? message[0] : (() => {
        const joined = new Uint8Array(messageBytes);
        let at = 0;
        for (const part of message) {
          joined.set(part, at);
          at += part.length;
        }
        return joined;
      })();
      message = [];
      messageBytes = 0;
      if (socket.readyState !== WebSocket.OPEN) continue;
      const text = messageOpcode === OPCODE_TEXT ? utf8(whole) : null;
      if (text === INVALID_UTF8) {
        // RFC 6455 §8.1: a text message that is not UTF-8 fails the connection, close code 1007
        // (§7.4.1). Replacing the bad bytes would hand the client text the upstream never sent.
        closeCode ??= 1007;
        ending ??= "protocol_error";
        sendCloseUpstream(1007, "invalid UTF-8 in a text message");
        closeClient(1007, "invalid UTF-8 in a text message");
        return;
      }
      socket.send(text ?? whole);
      while (socket.readyState === WebSocket.OPEN && socket.bufferedAmount > HIGH_WATER_BYTES) {
        await new Promise((wake) => setTimeout(wake, 5));
      }
    }
  };

  readUpstream().catch(() => {}).then(async () => {
    // The upstream's side ended without a close frame: the WebSocket API cannot end the
    // client's connection without one, so the client gets 1000 with a reason that says so.
    if (closeCode === null) ending ??= "upstream_gone";
    if (ending === "upstream_gone") closeClient(1000, "upstream connection ended");
    await writing;
    closeUpstream();
    clearTimeout(idleTimer);
    clearTimeout(closeTimer);
    if (socket.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((done) => {
        const timer = setTimeout(done, closeTimeoutMs);
        socket.addEventListener("close", () => {
          clearTimeout(timer);
          done();
        }, { once: true });
      });
    }
    resolve({ bytesFromClient, bytesFromUpstream, closeCode, ending: ending ?? "upstream_gone" });
  });
  return ended;
}
