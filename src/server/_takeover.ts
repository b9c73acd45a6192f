/**
 * A connection handed over by the server to a handler that takes it over after its request
 * (an HTTP/1.1 `Upgrade`, RFC 9110 §7.8): from then on the server writes nothing on it, and
 * the handler owns its bytes until it closes it.
 *
 * Reads still go through the server's {@link Connection} (one read outstanding at a time), so
 * bytes the client sent right after its request head, already in the read-ahead buffer, come
 * first, and a connection closed by the server (`close()`) ends the taker's reads.
 *
 * @module
 */
import type { Connection } from "./_connection.ts";

/** The client's connection, owned by whoever took it over. */
export interface TakenConnection {
  /** The peer. */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * Reads into `buffer`: the bytes already read past the request head first, then the socket.
   * Resolves with the count, or null at EOF, after an error, or once the connection is closed.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes all of `bytes`; throws when the socket fails. */
  write(bytes: Uint8Array): Promise<void>;
  /** Half-closes: sends FIN and keeps reading (errors ignored). */
  closeWrite(): Promise<void>;
  /** Closes the socket (idempotent). */
  close(): void;
  /** True once closed. */
  readonly closed: boolean;
  /**
   * Called once when the server shuts down gracefully while the connection is taken over: the
   * taker ends its session in its own protocol's way (a WebSocket close frame, RFC 6455 §7.4.1
   * 1001) and closes; the server's `shutdown()` waits for that.
   */
  onShutdown: (() => void) | null;
}

/**
 * Hands `connection` over; the caller moved it into a phase the timeout sweep ignores. A
 * shutdown that comes before the taker set its `onShutdown` (while it still writes its first
 * bytes) is kept and delivered when it does.
 */
export function takeOverConnection(connection: Connection): TakenConnection {
  let shutdownRequested = false;
  let onShutdown: (() => void) | null = null;
  connection.onShutdown = () => {
    shutdownRequested = true;
    const callback = onShutdown;
    onShutdown = null;
    callback?.();
  };
  return {
    remoteAddr: connection.remoteAddr,
    async read(buffer) {
      while (true) {
        if (connection.buffered > 0) {
          const bytes = connection.take(Math.min(buffer.length, connection.buffered));
          buffer.set(bytes);
          return bytes.length;
        }
        if (connection.closed || connection.eof) return null;
        if (connection.isReading) {
          // The "client gone" watch posted while the handler ran: its bytes land in the
          // read-ahead buffer and are taken above.
          await connection.waitRead();
          continue;
        }
        // Straight from the socket: nothing else reads it now (no watch, no head parser), and
        // the connection's own read bookkeeping (a waiter promise per read) is not needed.
        try {
          const n = await connection.conn.read(buffer);
          if (n !== null) return n;
        } catch {
          // reset, or closed under the read
        }
        return null;
      }
    },
    write: (bytes) => connection.write(bytes),
    async closeWrite() {
      try {
        await connection.conn.closeWrite();
      } catch {
        // closed or reset already
      }
    },
    close: () => connection.close(),
    get closed() {
      return connection.closed;
    },
    get onShutdown() {
      return onShutdown;
    },
    set onShutdown(callback) {
      if (shutdownRequested && callback !== null) queueMicrotask(callback);
      else onShutdown = callback;
    },
  };
}
