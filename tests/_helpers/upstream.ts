/**
 * Real upstream servers for tests: `Deno.serve` on loopback, port 0, with the connection and
 * request counts the assertions need.
 *
 * @module
 */

/** A running test upstream. */
export interface TestUpstream {
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  /** Its port. */
  port: number;
  /** Requests it received. */
  requests: Request[];
  /** Distinct client connections it accepted (by remote port). */
  connections(): number;
  /** Stops it. */
  close(): Promise<void>;
}

/** Starts an upstream with the given handler. */
export function startUpstream(
  handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
  port = 0,
): TestUpstream {
  const requests: Request[] = [];
  const remotePorts = new Set<number>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => {} },
    (request, info) => {
      requests.push(request);
      remotePorts.add(info.remoteAddr.port);
      return handler(request, info);
    },
  );
  let closed = false;
  return {
    origin: `http://127.0.0.1:${server.addr.port}`,
    port: server.addr.port,
    requests,
    connections: () => remotePorts.size,
    close: async () => {
      if (closed) return;
      closed = true;
      await server.shutdown();
    },
  };
}

/** A raw TCP server whose connection behaviour a test scripts (resets, hangs, garbage). */
export interface RawUpstream {
  /** `http://127.0.0.1:PORT`. */
  origin: string;
  /** Connections accepted so far. */
  accepted(): number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts a TCP listener that hands every connection to `onConnection`. */
export function startRawUpstream(onConnection: (conn: Deno.TcpConn) => Promise<void>): RawUpstream {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        conns.add(conn);
        const task = onConnection(conn).catch(() => {}).finally(() => {
          conns.delete(conn);
          try {
            conn.close();
          } catch {
            // already closed by the script
          }
        });
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch {
      // listener closed
    }
  })();
  return {
    origin: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    accepted: () => accepted,
    close: async () => {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    },
  };
}

/** Reads from a connection until the end of the request head (`\r\n\r\n`). */
export async function readRequestHead(conn: Deno.Conn): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(16 * 1024);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += decoder.decode(buffer.subarray(0, n));
  }
  return text;
}

/** A free loopback port (bound and released; good enough for tests that spawn processes). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Sends raw bytes to `port` on loopback and returns everything read until the peer closes. */
export async function sendRaw(port: number, request: string, timeoutMs = 5000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }, timeoutMs);
  try {
    await conn.write(new TextEncoder().encode(request));
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(16 * 1024);
    let text = "";
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch {
        break;
      }
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n));
    }
    return text;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
}
