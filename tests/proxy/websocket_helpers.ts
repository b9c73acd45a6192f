/**
 * WebSocket parts for tests: a real WebSocket upstream (`Deno.serve` + `Deno.upgradeWebSocket`)
 * whose behaviour the path picks, Deno's own `WebSocket` client with bounded waits, and a raw
 * socket client that speaks the handshake and frames by hand (for pings, bad keys and bytes
 * Deno's client would never send).
 *
 * @module
 */
import { within } from "../_helpers/wait.ts";
import { acceptFor } from "../../src/proxy/websocket_handshake.ts";

/** The upgrade request's headers an upstream session records. */
const RECORDED_HEADERS = [
  "via",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-request-id",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
];

/** What the upstream saw of one session. */
export interface UpstreamSession {
  /** The upgrade request's path. */
  path: string;
  /** The upgrade request's headers as the upstream received them (those recorded). */
  headers: Headers;
  /** Messages received (text as string, binary as bytes). */
  messages: (string | Uint8Array)[];
  /** The close the upstream received, once it did. */
  closed: { code: number; reason: string } | null;
}

/** A WebSocket upstream. */
export interface WebSocketUpstream {
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  /** Every session, in order of opening. */
  sessions: UpstreamSession[];
  /** Upgrade requests it answered without switching (403, 503). */
  refused: number;
  /** Stops it (its open sockets are closed first). */
  close(): Promise<void>;
}

/**
 * Starts the upstream. Paths (under any prefix):
 * - `.../echo`: text comes back as `echo:<text>`, binary as sent; the text `close:<code>:<reason>`
 *   makes the upstream close with that code and reason;
 * - `.../forbidden`: 403, `.../unavailable`: 503 (no upgrade).
 */
export function startWebSocketUpstream(): WebSocketUpstream {
  const sessions: UpstreamSession[] = [];
  const sockets = new Set<WebSocket>();
  const upstream: WebSocketUpstream = {
    origin: "",
    sessions,
    refused: 0,
    close: async () => {
      for (const socket of sockets) {
        if (socket.readyState === WebSocket.OPEN) socket.close(1001, "upstream stopping");
      }
      await server.shutdown();
    },
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path.endsWith("/forbidden")) {
      upstream.refused++;
      return new Response("not for you", { status: 403 });
    }
    if (path.endsWith("/unavailable")) {
      upstream.refused++;
      return new Response("down", { status: 503 });
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response(`plain ${path} upgrade=${request.headers.get("upgrade")}`);
    }
    // Read before the upgrade: after it, the request's headers throw "Request closed".
    const headers = new Headers(
      RECORDED_HEADERS.flatMap((name) => {
        const value = request.headers.get(name);
        return value === null ? [] : [[name, value] as [string, string]];
      }),
    );
    const { socket, response } = Deno.upgradeWebSocket(request);
    const session: UpstreamSession = {
      path,
      headers,
      messages: [],
      closed: null,
    };
    sessions.push(session);
    sockets.add(socket);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      if (typeof event.data === "string") {
        session.messages.push(event.data);
        const close = /^close:(\d+):(.*)$/.exec(event.data);
        if (close) socket.close(Number(close[1]), close[2]);
        else socket.send(`echo:${event.data}`);
      } else {
        const bytes = new Uint8Array(event.data as ArrayBuffer);
        session.messages.push(bytes);
        socket.send(bytes);
      }
    };
    socket.onclose = (event) => {
      session.closed = { code: event.code, reason: event.reason };
      sockets.delete(socket);
    };
    socket.onerror = () => {};
    return response;
  });
  upstream.origin = `http://127.0.0.1:${server.addr.port}`;
  return upstream;
}

/** A Deno `WebSocket` client with bounded waits for its events. */
export interface TestClient {
  /** The socket. */
  socket: WebSocket;
  /** Messages received, in order. */
  messages: (string | Uint8Array)[];
  /** The close event, once it came. */
  closed: { code: number; reason: string; wasClean: boolean } | null;
  /** The next message not yet handed out, waiting for it at most `timeoutMs`. */
  next(timeoutMs?: number): Promise<string | Uint8Array>;
  /** Waits for the close event (at most `timeoutMs`). */
  waitClosed(timeoutMs?: number): Promise<{ code: number; reason: string; wasClean: boolean }>;
  /** Closes (if open) and waits for the close event. */
  close(): Promise<void>;
}

/** Opens a `WebSocket` to `url`; rejects when it does not open within `timeoutMs`. */
export async function openClient(url: string, timeoutMs = 5000): Promise<TestClient> {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const messages: (string | Uint8Array)[] = [];
  let waiting: (() => void) | null = null;
  /** Messages handed out by `next()`. */
  let read = 0;
  const { promise: closing, resolve: onClosed } = Promise.withResolvers<
    { code: number; reason: string; wasClean: boolean }
  >();
  const client: TestClient = {
    socket,
    messages,
    closed: null,
    async next(ms = 5000) {
      const at = read++;
      if (client.closed === null && messages.length <= at) {
        await within(
          new Promise<void>((resolve) => waiting = resolve),
          ms,
          "the next WebSocket message",
        );
      }
      if (messages.length <= at) throw new Error(`closed: ${JSON.stringify(client.closed)}`);
      return messages[at];
    },
    waitClosed: (ms = 5000) => within(closing, ms, "the WebSocket close event"),
    async close() {
      if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
        socket.close();
      }
      await within(closing, 5000, "the WebSocket close event").catch(() => {});
    },
  };
  socket.onmessage = (event) => {
    messages.push(
      typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer),
    );
    const wake = waiting;
    waiting = null;
    wake?.();
  };
  socket.onerror = () => {};
  socket.onclose = (event) => {
    client.closed = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    onClosed(client.closed);
    const wake = waiting;
    waiting = null;
    wake?.();
  };
  const opened = new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    closing.then((event) => reject(new Error(`closed before open: ${JSON.stringify(event)}`)));
  });
  try {
    await within(opened, timeoutMs, `the WebSocket to ${url} opening`);
  } catch (error) {
    await client.close();
    throw error;
  }
  return client;
}

/** A handshake written by hand. */
export function handshakeRequest(
  path: string,
  options: { key?: string; version?: string; extra?: string } = {},
): string {
  return `GET ${path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${options.key ?? "dGhlIHNhbXBsZSBub25jZQ=="}\r\n` +
    `Sec-WebSocket-Version: ${options.version ?? "13"}\r\n${options.extra ?? ""}\r\n`;
}

/** A raw client connection: the head read, then frames by hand. */
export interface RawClient {
  /** The response head (status line and fields). */
  head: string;
  /** The status. */
  status: number;
  /** Bytes read after the head and not consumed yet. */
  pending: Uint8Array;
  /** The socket. */
  conn: Deno.TcpConn;
  /** Sends a masked frame (a client's frames must be masked, RFC 6455 §5.3). */
  send(opcode: number, payload: Uint8Array): Promise<void>;
  /** The bytes after the head as text, read until `pattern` matches, EOF or `timeoutMs`. */
  readUntil(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Reads the next whole frame (at most `timeoutMs`); null at EOF. */
  frame(timeoutMs?: number): Promise<{ opcode: number; payload: Uint8Array } | null>;
  /** Closes the socket. */
  close(): void;
}

/** Connects to `port`, sends `request` and reads the response head. */
export async function rawClient(port: number, request: string): Promise<RawClient> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let pending: Uint8Array = new Uint8Array(0);
  const more = async (timeoutMs: number): Promise<boolean> => {
    const buffer = new Uint8Array(65536);
    const n = await within(conn.read(buffer), timeoutMs, "bytes from the gateway");
    if (n === null) return false;
    const joined = new Uint8Array(pending.length + n);
    joined.set(pending);
    joined.set(buffer.subarray(0, n), pending.length);
    pending = joined;
    return true;
  };
  const closeConn = () => {
    try {
      conn.close();
    } catch {
      // closed
    }
  };
  try {
    await conn.write(new TextEncoder().encode(request));
    let end = -1;
    while ((end = indexOfHeadEnd(pending)) === -1) {
      if (!(await more(5000))) break;
    }
    const head = new TextDecoder().decode(pending.subarray(0, end === -1 ? pending.length : end));
    pending = pending.slice(end === -1 ? pending.length : end + 4);
    const client: RawClient = {
      head,
      status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
      get pending() {
        return pending;
      },
      conn,
      async send(opcode, payload) {
        const key = crypto.getRandomValues(new Uint8Array(4));
        const lengthBytes = payload.length < 126 ? 0 : payload.length < 65536 ? 2 : 8;
        const frame = new Uint8Array(2 + lengthBytes + 4 + payload.length);
        frame[0] = 0x80 | opcode;
        if (lengthBytes === 0) frame[1] = 0x80 | payload.length;
        else if (lengthBytes === 2) {
          frame[1] = 0x80 | 126;
          frame[2] = payload.length >> 8;
          frame[3] = payload.length & 0xff;
        } else {
          frame[1] = 0x80 | 127;
          new DataView(frame.buffer).setBigUint64(2, BigInt(payload.length));
        }
        frame.set(key, 2 + lengthBytes);
        for (let i = 0; i < payload.length; i++) {
          frame[6 + lengthBytes + i] = payload[i] ^ key[i & 3];
        }
        await conn.write(frame);
      },
      async readUntil(pattern, timeoutMs = 5000) {
        const decoder = new TextDecoder();
        while (!pattern.test(decoder.decode(pending))) {
          if (!(await more(timeoutMs))) break;
        }
        return decoder.decode(pending);
      },
      async frame(timeoutMs = 5000) {
        while (true) {
          const parsed = parseServerFrame(pending);
          if (parsed !== null) {
            pending = pending.slice(parsed.length);
            return { opcode: parsed.opcode, payload: parsed.payload };
          }
          if (!(await more(timeoutMs))) return null;
        }
      },
      close: closeConn,
    };
    return client;
  } catch (error) {
    closeConn();
    throw error;
  }
}

function indexOfHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/** An unmasked frame from a server, or null while incomplete. */
function parseServerFrame(
  bytes: Uint8Array,
): { opcode: number; payload: Uint8Array; length: number } | null {
  if (bytes.length < 2) return null;
  let length = bytes[1] & 0x7f;
  let at = 2;
  if (length === 126) {
    if (bytes.length < 4) return null;
    length = (bytes[2] << 8) | bytes[3];
    at = 4;
  } else if (length === 127) {
    if (bytes.length < 10) return null;
    length = Number(new DataView(bytes.buffer, bytes.byteOffset + 2, 8).getBigUint64(0));
    at = 10;
  }
  if ((bytes[1] & 0x80) !== 0) throw new Error("a server frame must not be masked");
  if (bytes.length < at + length) return null;
  return {
    opcode: bytes[0] & 0x0f,
    payload: bytes.slice(at, at + length),
    length: at + length,
  };
}

/**
 * A raw upstream's side of the handshake: reads the upgrade request's head from `conn` (bytes
 * after it are not kept); null when the gateway closed first.
 */
export async function readUpgradeHead(conn: Deno.Conn): Promise<string | null> {
  const buffer = new Uint8Array(8192);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return null;
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return head;
}

/** The 101 a correct upstream answers the upgrade request `head` with (RFC 6455 §4.2.2). */
export async function switchFor(head: string): Promise<Uint8Array> {
  const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
  return new TextEncoder().encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`,
  );
}
