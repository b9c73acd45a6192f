/**
 * A WebSocket session where the gateway does not own the client's connection (embedded on
 * `Deno.serve`): the client side is a `WebSocket` from `Deno.upgradeWebSocket`, the upstream
 * side the raw connection the handshake was sent on. Messages cross over one by one, so unlike
 * the byte relay (`./websocket_relay.ts`) they are reassembled and re-framed here:
 *
 * - upstream to client: frames read (RFC 6455 §5.2), fragments joined (at most
 *   `maxMessageBytes`, else both sides get 1009), text and binary sent on the `WebSocket`,
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
// One of each per process, not per message: both are stateless between calls used like this.
const encoder = new TextEncoder();
const decoder = new TextDecoder();

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

  const closeUpstream = () => {
    if (upstreamClosed) return;
    upstreamClosed = true;
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
    let pending = upstreamFirst;
    const buffer = new Uint8Array(64 * 1024);
    const more = async (): Promise<boolean> => {
      const n = await conn.read(buffer);
      if (n === null) return false;
      bytesFromUpstream += n;
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(buffer.subarray(0, n), pending.length);
      pending = joined;
      return true;
    };
    bytesFromUpstream += upstreamFirst.length;
    let message: Uint8Array[] = [];
    let messageBytes = 0;
    let messageOpcode = 0;
    while (true) {
      // A whole frame: header (2-14 bytes), then the payload.
      while (pending.length < 2) if (!(await more())) return;
      const lengthCode = pending[1] & 0x7f;
      const headerBytes = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0);
      while (pending.length < headerBytes) if (!(await more())) return;
      const length = lengthCode === 126
        ? (pending[2] << 8) | pending[3]
        : lengthCode === 127
        ? Number(new DataView(pending.buffer, pending.byteOffset + 2, 8).getBigUint64(0))
        : lengthCode;
      if (messageBytes + length > maxMessageBytes) {
        closeCode ??= 1009;
        sendCloseUpstream(1009, "message too big");
        closeClient(1000, "message too big");
        return;
      }
      while (pending.length < headerBytes + length) if (!(await more())) return;
      const fin = (pending[0] & 0x80) !== 0;
      const opcode = pending[0] & 0x0f;
      const payload = pending.slice(headerBytes, headerBytes + length);
      pending = pending.subarray(headerBytes + length);
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
      socket.send(messageOpcode === 0x1 ? decoder.decode(whole) : whole);
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
