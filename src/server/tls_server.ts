/**
 * HTTPS for the public port: HTTP/2 and HTTP/1.1 chosen by ALPN (RFC 7301), with the
 * certificate swapped on a running listener.
 *
 * How the pieces fit (README, "TLS and HTTP/2"):
 * - this module owns the TLS listener (`Deno.listenTls`) and its accept loop, so every
 *   connection is counted against `maxConnections` and a TLS handshake that does not finish
 *   within `headerTimeoutMs` is closed (rustls has no handshake timeout of its own, and
 *   `Deno.serve` over TLS keeps a silent connection, a partial head and an idle keep-alive
 *   connection open forever: measured on Deno 2.9.6);
 * - a connection that chose `http/1.1` is handed to the gateway's own HTTP/1.1 server
 *   (`serveHttp1` with a hand-over listener): the same strict parsing, head, idle and body
 *   timeouts as the plain port;
 * - a connection that chose `h2` is piped, decrypted, into a `Deno.serve` on a loopback port
 *   (hyper's HTTP/2, which speaks cleartext h2 with prior knowledge and brings its own abuse
 *   bounds: concurrent streams, header list size, the rapid-reset mitigation of h2 0.3.24 for
 *   CVE-2023-44487). The loopback server learns the client's address from the pipe's local
 *   port and refuses any connection that is not one of the pipes (421). An h2 connection with
 *   no stream in progress is closed after `headerTimeoutMs` before its first request and
 *   `idleTimeoutMs` after its last one (nginx's `keepalive_timeout` for HTTP/2), and a request
 *   body that sends nothing for `bodyIdleTimeoutMs` errors (408) as on HTTP/1.1;
 * - {@link TlsServer.setCertificate} opens a new listener with the new certificate on the same
 *   port and then closes the old one; connections already open keep the certificate they
 *   were accepted with. With `--unstable-net` (Deno's `reusePort`) both listeners share the
 *   port for that moment and no connection attempt is refused; without it, the old listener
 *   closes first and the port refuses connections for the few microseconds until the new
 *   one is bound.
 *
 * @module
 */
import { delay } from "../async/delay.ts";
import { createBodyIdleWatch } from "./_body_idle.ts";
import {
  type DirectRequest,
  type Handler,
  type Http1Server,
  serveHttp1,
  type ServeInfo,
} from "./http1_server.ts";

/** A PEM certificate chain and its private key. */
export interface CertificatePair {
  /** PEM certificate chain, leaf first. */
  cert: string;
  /** PEM private key (PKCS#8, SEC1 or PKCS#1). */
  key: string;
}

/** What the handler learns about a request on the TLS port. */
export interface TlsServeInfo extends Partial<Omit<ServeInfo, "remoteAddr" | "completed">> {
  /** The client (for HTTP/2 too: not the loopback pipe). */
  remoteAddr: Deno.NetAddr;
  /** Settles when the response was written or the client went away. */
  completed: Promise<void>;
  /** Always `https`. */
  scheme: "https";
  /** The protocol ALPN chose. */
  protocol: "h2" | "http/1.1";
}

/**
 * A handler for the TLS port: Hono's `app.fetch` fits. Its `direct` entry point, when it has
 * one, serves the HTTP/1.1 requests as the own server parsed them (see `Handler` in
 * `http1_server.ts`), with `scheme` and `protocol` added.
 */
export type TlsHandler =
  & ((request: Request, info: TlsServeInfo) => Response | Promise<Response>)
  & {
    direct?: (
      request: DirectRequest & Pick<TlsServeInfo, "scheme" | "protocol">,
    ) => Response | Promise<Response> | null;
  };

/** Options of {@link serveTls}. */
export interface TlsServerOptions extends CertificatePair {
  /** The address to listen on (default `0.0.0.0`). */
  hostname?: string;
  /** The port (default 8443; 0 picks a free one). */
  port?: number;
  /** Offer `h2` by ALPN (default true); false offers only `http/1.1`. */
  http2?: boolean;
  /** The TLS handshake, and the first request head, must arrive within this. Default 10000. */
  headerTimeoutMs?: number;
  /** A connection with no request in progress is closed after this. Default 60000. */
  idleTimeoutMs?: number;
  /** A stalled HTTP/1.1 request body errors after this. Default 60000. */
  bodyIdleTimeoutMs?: number;
  /** Connections open at once (handshaking, HTTP/1.1 and HTTP/2); null: no cap. */
  maxConnections?: number | null;
  /** Called with what a handler threw (the client gets a 500). Default `console.error`. */
  onError?: (error: unknown) => void;
  /** The clock for timeouts, in ms. Default `performance.now`. */
  now?: () => number;
}

/** A running HTTPS server. */
export interface TlsServer {
  /** The address it listens on. */
  addr: Deno.NetAddr;
  /** Open client connections (handshaking, HTTP/1.1 and HTTP/2). */
  connections(): number;
  /**
   * Serves new connections with another certificate; open ones keep theirs. False when the
   * pair is the one already served (nothing changes) or the server is shutting down.
   *
   * @throws {Error} when the pair is invalid or the port cannot be bound again (the old
   *   certificate keeps serving when `reusePort` is available)
   */
  setCertificate(pair: CertificatePair): boolean;
  /** Stops accepting, lets requests in flight finish and resolves when no connection is left. */
  shutdown(): Promise<void>;
}

/** The TLS handler as the HTTP/1.1 server's, `direct` entry point included. */
function http1Handler(handler: TlsHandler): Handler {
  const wrapped: Handler = (request, info) =>
    handler(request, { ...info, scheme: "https", protocol: "http/1.1" });
  const direct = handler.direct;
  if (direct !== undefined) {
    wrapped.direct = (request) => direct({ ...request, scheme: "https", protocol: "http/1.1" });
  }
  return wrapped;
}

/** Whether Deno was started with `--unstable-net` (which `reusePort` needs). */
function unstableNet(): boolean {
  return typeof (Deno as unknown as { listenDatagram?: unknown }).listenDatagram === "function";
}

/** A listener that yields the connections pushed into it (the HTTP/1.1 hand-over). */
interface Handover {
  listener: Deno.Listener<Deno.TcpConn>;
  push(conn: Deno.TlsConn): void;
}

function createHandover(addr: Deno.NetAddr): Handover {
  const queue: Deno.TlsConn[] = [];
  let waiter: PromiseWithResolvers<Deno.TcpConn> | null = null;
  let closed = false;
  const listener = {
    addr,
    accept(): Promise<Deno.TcpConn> {
      if (closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
      const next = queue.shift();
      // The HTTP/1.1 server uses read, write, closeWrite, close and remoteAddr, which a TLS
      // connection has too.
      if (next !== undefined) return Promise.resolve(next as unknown as Deno.TcpConn);
      waiter = Promise.withResolvers<Deno.TcpConn>();
      return waiter.promise;
    },
    close() {
      if (closed) return;
      closed = true;
      waiter?.reject(new Deno.errors.BadResource("listener closed"));
      waiter = null;
      for (const conn of queue.splice(0)) closeQuietly(conn);
    },
  };
  return {
    listener: listener as unknown as Deno.Listener<Deno.TcpConn>,
    push(conn) {
      if (closed) return closeQuietly(conn);
      if (waiter !== null) {
        const current = waiter;
        waiter = null;
        current.resolve(conn as unknown as Deno.TcpConn);
      } else queue.push(conn);
    },
  };
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed
  }
}

/** An accepted connection before its handshake finished. */
interface Handshaking {
  conn: Deno.TlsConn;
  since: number;
}

/** One HTTP/2 client connection and its loopback pipe. */
interface H2Pipe {
  tls: Deno.TlsConn;
  inner: Deno.TcpConn;
  remoteAddr: Deno.NetAddr;
  /** Streams in progress. */
  active: number;
  /** When the connection last had no stream in progress (or was handed over). */
  idleSince: number;
  /** Whether a request ever started on it. */
  used: boolean;
  closed: boolean;
}

const PIPE_BUFFER_BYTES = 64 * 1024;

/**
 * An HTTP/2 request with its `:authority` as the `Host` field (RFC 9113 §8.3.1: it stands in
 * for Host). hyper keeps the authority in the URL only, and the Request's headers are
 * immutable, so without this the handler sees no Host over h2: no validation of a malformed
 * authority (400 on HTTP/1.1) and no `X-Forwarded-Host` upstream. The URL gets a fixed
 * authority: a hostile one (userinfo, a bad port) must not make the Request constructor throw
 * before the handler can refuse it.
 */
function withAuthorityAsHost(request: Request, body: ReadableStream<Uint8Array> | null): Request {
  if (request.headers.has("host")) return request;
  const url = request.url;
  const start = url.indexOf("://") + 3;
  const slash = url.indexOf("/", start);
  const end = slash === -1 ? url.length : slash;
  const headers = new Headers(request.headers);
  headers.set("host", url.slice(start, end));
  try {
    return new Request(`http://h2.invalid${slash === -1 ? "/" : url.slice(end)}`, {
      method: request.method,
      headers,
      signal: request.signal,
      ...(body === null ? {} : { body, duplex: "half" }),
    });
  } catch {
    // A method the Request constructor refuses (CONNECT, TRACE): the handler refuses it anyway.
    return request;
  }
}
/** How long shutdown waits for hyper to close an HTTP/2 connection whose streams finished. */
const SHUTDOWN_GRACE_MS = 1000;

/**
 * Starts an HTTPS server: HTTP/2 and HTTP/1.1 by ALPN, the gateway's own HTTP/1.1 server behind
 * TLS, hyper's HTTP/2 behind a loopback pipe.
 *
 * @throws {Error} when the certificate or key is invalid, or the address cannot be bound
 * @example
 * ```ts
 * const server = serveTls({
 *   port: 8443,
 *   cert: Deno.readTextFileSync("cert.pem"),
 *   key: Deno.readTextFileSync("key.pem"),
 * }, (request, info) => new Response(`${info.protocol} ${new URL(request.url).pathname}\n`));
 * // after the files changed:
 * server.setCertificate({ cert: Deno.readTextFileSync("cert.pem"), key: Deno.readTextFileSync("key.pem") });
 * await server.shutdown();
 * ```
 */
export function serveTls(options: TlsServerOptions, handler: TlsHandler): TlsServer {
  const now = options.now ?? (() => performance.now());
  const headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const maxConnections = options.maxConnections ?? null;
  const bodyIdleTimeoutMs = options.bodyIdleTimeoutMs ?? 60_000;
  const onError = options.onError ??
    ((error: unknown) => console.error("breakwater: handler failed", error));
  const http2 = options.http2 ?? true;
  const alpnProtocols = http2 ? ["h2", "http/1.1"] : ["http/1.1"];
  const reusePort = unstableNet();
  const hostname = options.hostname ?? "0.0.0.0";

  const open = (pair: CertificatePair, port: number): Deno.TlsListener => {
    const listenOptions: Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem & { reusePort?: boolean } =
      { hostname, port, cert: pair.cert, key: pair.key, alpnProtocols };
    if (reusePort) listenOptions.reusePort = true;
    return Deno.listenTls(listenOptions);
  };

  let current: CertificatePair = { cert: options.cert, key: options.key };
  let listener = open(current, options.port ?? 8443);
  const addr = listener.addr as Deno.NetAddr;
  let accepting = true;
  const handshaking = new Set<Handshaking>();
  const pipes = new Set<H2Pipe>();
  const byInnerPort = new Map<number, H2Pipe>();
  /** Completion of every HTTP/2 response in flight (shutdown waits for them). */
  const streams = new Set<Promise<void>>();
  /** Accept loops still running (one, or two for a moment after a certificate swap). */
  const acceptLoops = new Set<Promise<void>>();
  const track = (loop: Promise<void>) => {
    acceptLoops.add(loop);
    const done = () => acceptLoops.delete(loop);
    loop.then(done, done);
  };
  const emptyWaiters: (() => void)[] = [];
  // Every h2 request body lives on a pipe, so the sweep runs (pipes.size > 0) while one is read.
  const uploads = createBodyIdleWatch(bodyIdleTimeoutMs, now);

  const handover = createHandover(addr);
  const h1: Http1Server = serveHttp1({
    listener: handover.listener,
    headerTimeoutMs,
    idleTimeoutMs,
    bodyIdleTimeoutMs,
    maxConnections,
    onError,
    now,
  }, http1Handler(handler));

  // hyper's HTTP/2 on a loopback port, fed only through the pipes below.
  const inner = !http2 ? null : Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    onError(error) {
      onError(error);
      return new Response("internal error", { status: 500 });
    },
  }, (request, info) => {
    const pipe = byInnerPort.get((info.remoteAddr as Deno.NetAddr).port);
    // Anything else on this loopback port did not come through TLS (RFC 9110 §15.5.20).
    if (pipe === undefined) return new Response(null, { status: 421 });
    pipe.active++;
    pipe.used = true;
    // Settled either way (a stream the client reset may reject it), never left unhandled.
    const settled = info.completed.then(() => {}, () => {});
    streams.add(settled);
    settled.then(() => {
      streams.delete(settled);
      if (--pipe.active === 0) pipe.idleSince = now();
    });
    // hyper waits for a stalled upload forever; the plain port's body idle timeout holds here
    // too (GET and HEAD bodies are not on the Request: none to bound).
    const body = request.body === null ? null : uploads.bound(request.body, settled);
    return handler(withAuthorityAsHost(request, body), {
      remoteAddr: pipe.remoteAddr,
      completed: info.completed,
      scheme: "https",
      protocol: "h2",
      ...(body === null ? {} : { body }),
    });
  });
  const innerPort = inner === null ? 0 : inner.addr.port;

  const total = () => handshaking.size + pipes.size + h1.connections();

  const closePipe = (pipe: H2Pipe) => {
    if (pipe.closed) return;
    pipe.closed = true;
    closeQuietly(pipe.tls);
    closeQuietly(pipe.inner);
    pipes.delete(pipe);
    byInnerPort.delete((pipe.inner.localAddr as Deno.NetAddr).port);
    settleIfEmpty();
  };

  const settleIfEmpty = () => {
    if (handshaking.size > 0 || pipes.size > 0) return;
    if (sweepTimer !== null) {
      clearInterval(sweepTimer);
      sweepTimer = null;
    }
    for (const resolve of emptyWaiters.splice(0)) resolve();
  };

  // One coarse sweep for handshake, HTTP/2 idle and HTTP/2 upload timeouts, as the HTTP/1.1
  // server does: a timer per body chunk would be one per DATA frame of every upload.
  const tickMs = Math.max(
    5,
    Math.min(1000, Math.floor(Math.min(headerTimeoutMs, idleTimeoutMs, bodyIdleTimeoutMs) / 10)),
  );
  let sweepTimer: ReturnType<typeof setInterval> | null = null;
  const sweep = () => {
    const time = now();
    for (const entry of handshaking) {
      if (time - entry.since >= headerTimeoutMs) closeQuietly(entry.conn);
    }
    for (const pipe of pipes) {
      if (pipe.active > 0) continue;
      const limit = pipe.used ? idleTimeoutMs : headerTimeoutMs;
      if (time - pipe.idleSince >= limit) closePipe(pipe);
    }
    uploads.sweep();
  };

  const pump = async (from: Deno.Conn, to: Deno.Conn): Promise<void> => {
    const buffer = new Uint8Array(PIPE_BUFFER_BYTES);
    while (true) {
      const n = await from.read(buffer);
      if (n === null) return;
      let offset = 0;
      while (offset < n) offset += await to.write(buffer.subarray(offset, n));
    }
  };

  const startPipe = async (tls: Deno.TlsConn, entry: Handshaking) => {
    let innerConn: Deno.TcpConn;
    try {
      innerConn = await Deno.connect({ hostname: "127.0.0.1", port: innerPort });
    } catch (error) {
      handshaking.delete(entry);
      closeQuietly(tls);
      onError(error);
      settleIfEmpty();
      return;
    }
    innerConn.setNoDelay(true);
    const pipe: H2Pipe = {
      tls,
      inner: innerConn,
      remoteAddr: tls.remoteAddr as Deno.NetAddr,
      active: 0,
      idleSince: now(),
      used: false,
      closed: false,
    };
    pipes.add(pipe);
    handshaking.delete(entry);
    byInnerPort.set((innerConn.localAddr as Deno.NetAddr).port, pipe);
    if (!accepting) return closePipe(pipe); // shut down while the pipe connected
    // Either side ending ends the connection: an HTTP/2 peer never half-closes on purpose.
    await Promise.race([pump(tls, innerConn), pump(innerConn, tls)]).catch(() => {});
    closePipe(pipe);
  };

  const dispatch = async (conn: Deno.TlsConn) => {
    const entry: Handshaking = { conn, since: now() };
    handshaking.add(entry);
    sweepTimer ??= setInterval(sweep, tickMs);
    let protocol: string | null = null;
    let ok = true;
    try {
      protocol = (await conn.handshake()).alpnProtocol;
    } catch {
      ok = false;
    }
    handshaking.delete(entry);
    if (!ok || !accepting) {
      closeQuietly(conn);
    } else if (protocol === "h2" && inner !== null) {
      handshaking.add(entry); // still counted while the pipe connects
      await startPipe(conn, entry);
      return;
    } else {
      handover.push(conn);
    }
    settleIfEmpty();
  };

  const acceptLoop = async (from: Deno.TlsListener) => {
    while (accepting && from === listener) {
      let conn: Deno.TlsConn;
      try {
        conn = await from.accept();
      } catch (error) {
        if (!accepting || from !== listener || error instanceof Deno.errors.BadResource) return;
        await delay(50); // out of file descriptors or the like: no busy loop
        continue;
      }
      if (maxConnections !== null && total() >= maxConnections) {
        closeQuietly(conn);
        continue;
      }
      dispatch(conn).catch(onError);
    }
  };
  track(acceptLoop(listener));

  const closeListener = (old: Deno.TlsListener) => {
    try {
      old.close();
    } catch {
      // closed
    }
  };

  return {
    addr,
    connections: total,
    setCertificate(pair) {
      if (!accepting) return false;
      // The same files again (a reload for another reason): the listener stays as it is.
      if (pair.cert === current.cert && pair.key === current.key) return false;
      const old = listener;
      if (reusePort) {
        // Bound beside the old one: a failure here leaves the old certificate serving.
        listener = open(pair, addr.port);
        closeListener(old);
      } else {
        checkCertificatePair(pair);
        listener = null as unknown as Deno.TlsListener; // ends the old accept loop
        closeListener(old);
        try {
          listener = open(pair, addr.port);
        } catch (error) {
          // The port was lost in the gap: serve the old certificate again if possible.
          listener = open(current, addr.port);
          track(acceptLoop(listener));
          throw error;
        }
      }
      current = { cert: pair.cert, key: pair.key };
      track(acceptLoop(listener));
      return true;
    },
    async shutdown() {
      accepting = false;
      closeListener(listener);
      for (const entry of handshaking) closeQuietly(entry.conn);
      // hyper answers GOAWAY and lets streams in flight finish; the pipes close behind it.
      for (const pipe of pipes) if (pipe.active === 0) closePipe(pipe);
      const empty = handshaking.size === 0 && pipes.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => emptyWaiters.push(resolve));
      // Deno.serve's shutdown settles once handlers returned, with streamed bodies still going:
      // the pipes stay until every response was written.
      await Promise.all([h1.shutdown(), inner?.shutdown(), ...acceptLoops]);
      while (streams.size > 0) await Promise.all(streams);
      // The last bytes may still be on their way through a pipe: hyper closes its side once
      // they are written (GOAWAY sent, no stream left), which ends the pipe; a pipe still
      // open after a grace period is closed.
      let grace: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        empty,
        new Promise<void>((resolve) => grace = setTimeout(resolve, SHUTDOWN_GRACE_MS)),
      ]);
      clearTimeout(grace);
      for (const pipe of [...pipes]) closePipe(pipe);
      await empty;
    },
  };
}

/**
 * Throws when rustls refuses the pair (no certificate, no key, or a key that does not match
 * the certificate), by binding a throwaway listener on a loopback port.
 *
 * @example
 * ```ts
 * checkCertificatePair({ cert: Deno.readTextFileSync("cert.pem"), key: Deno.readTextFileSync("key.pem") });
 * ```
 */
export function checkCertificatePair(pair: CertificatePair): void {
  Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: pair.cert, key: pair.key }).close();
}
