/**
 * TLS to upstreams (README, "Upstream TLS"): the per-service trust and client certificate read
 * from files at load and reload, and the one function that opens a connection to an upstream
 * origin, plain or TLS, for every raw-socket client (the HTTP/1.1 client, WebSocket tunnels).
 *
 * Trust: Deno's bundled Mozilla roots (webpki-roots), or the operating system's store when the
 * process runs with `DENO_TLS_CA_STORE=system`, plus the service's `tls.caFile` bundle. The
 * name verified and sent as SNI is the upstream URL's host (RFC 6066 §3: an IP literal is never
 * sent as SNI; the certificate must then carry that IP as a subjectAltName). There is no switch
 * to skip verification: an upstream with a private certificate gets its CA in `tls.caFile`.
 *
 * @module
 */
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { abortable } from "../async/abortable.ts";
import { ConfigError, type ConfigProblem, type GatewayConfig } from "../config/schema.ts";
import { UpstreamError } from "./upstream_client.ts";

/** The files of a service's `tls` block, as the config names them. */
export interface UpstreamTlsFiles {
  /** PEM bundle of CA certificates trusted in addition to the default roots. */
  caFile: string | null;
  /** PEM certificate chain presented to upstreams that ask for one (mTLS). */
  certFile: string | null;
  /** PEM private key of `certFile`. */
  keyFile: string | null;
}

/** What a TLS connection to an upstream is opened with (PEM text, not paths). */
export interface UpstreamTlsOptions {
  /** Extra trusted CA certificates. */
  caCerts?: string[];
  /** Client certificate chain; only together with `key`. */
  cert?: string;
  /** Private key of `cert`. */
  key?: string;
}

/**
 * A service's TLS material as read from its files. Serialised (logs, the reload comparison) as
 * its digest only, so the private key never reaches a log line, while a rotated file still
 * reads as a changed service on reload.
 */
export class UpstreamTlsMaterial implements UpstreamTlsOptions {
  /** Extra trusted CA certificates, one PEM block each. */
  readonly caCerts: string[];
  /** Client certificate chain (PEM), or undefined. */
  readonly cert: string | undefined;
  /** Private key (PEM), or undefined. */
  readonly key: string | undefined;
  /** SHA-256 over all of it: equal digests, interchangeable connections. */
  readonly digest: string;

  /**
   * @param caCerts extra trusted CA certificates
   * @param cert client certificate chain
   * @param key its private key
   */
  constructor(caCerts: string[], cert?: string, key?: string) {
    this.caCerts = caCerts;
    this.cert = cert;
    this.key = key;
    const hash = createHash("sha256");
    for (const part of [...caCerts, "\0", cert ?? "", "\0", key ?? ""]) hash.update(part);
    this.digest = `sha256:${hash.digest("hex")}`;
  }

  /** Only the digest: the key stays out of JSON. */
  toJSON(): string {
    return this.digest;
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const PEM_PRIVATE_KEY = /-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

/**
 * Reads and checks a service's TLS files: each readable, PEM, certificates that parse, and a
 * key that belongs to the certificate.
 *
 * @param files the service's `tls` block
 * @param field its JSON path, e.g. `services.files.tls`, for the problems
 * @param read reads a file as text (tests pass their own)
 * @throws {ConfigError} naming `<field>.caFile`, `.certFile` or `.keyFile`
 * @example
 * ```ts
 * const material = readUpstreamTls(
 *   { caFile: "/etc/breakwater/internal-ca.pem", certFile: null, keyFile: null },
 *   "services.files.tls",
 * );
 * await connectUpstream("https://files.internal", material);
 * ```
 */
export function readUpstreamTls(
  files: UpstreamTlsFiles,
  field: string,
  read: (path: string) => string = Deno.readTextFileSync,
): UpstreamTlsMaterial {
  const problems: ConfigProblem[] = [];
  const text = (key: keyof UpstreamTlsFiles): string | undefined => {
    const path = files[key];
    if (path === null) return undefined;
    try {
      return read(path);
    } catch (error) {
      problems.push({ path: `${field}.${key}`, message: `cannot read ${path}: ${reason(error)}` });
      return undefined;
    }
  };
  const ca = text("caFile");
  const cert = text("certFile");
  const key = text("keyFile");
  const caCerts = ca === undefined ? [] : certificatesIn(ca, `${field}.caFile`, problems);
  if (cert !== undefined) certificatesIn(cert, `${field}.certFile`, problems);
  if (key !== undefined && !PEM_PRIVATE_KEY.test(key)) {
    problems.push({ path: `${field}.keyFile`, message: "holds no PEM private key" });
  } else if (key !== undefined && /ENCRYPTED PRIVATE KEY/.test(key)) {
    problems.push({
      path: `${field}.keyFile`,
      message: "is encrypted (a passphrase is not supported)",
    });
  }
  if (problems.length === 0 && cert !== undefined && key !== undefined) {
    const mismatch = keyMismatch(cert, key);
    if (mismatch !== null) problems.push({ path: `${field}.keyFile`, message: mismatch });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return new UpstreamTlsMaterial(caCerts, cert, key);
}

function reason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "file not found";
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    return "read not permitted (grant it with --allow-read; `deno task start` does)";
  }
  return error instanceof Error ? error.message : String(error);
}

/** Every certificate block in `pem`, each one parsed; problems when none or one is broken. */
function certificatesIn(pem: string, path: string, problems: ConfigProblem[]): string[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    problems.push({ path, message: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)" });
    return [];
  }
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (error) {
      problems.push({ path, message: `certificate ${index + 1} does not parse: ${reason(error)}` });
    }
  }
  return blocks;
}

/** Null when `key` is the private key of the first certificate of `cert`, else why not. */
function keyMismatch(cert: string, key: string): string | null {
  try {
    const leaf = new X509Certificate(cert.match(PEM_CERTIFICATE)![0]);
    if (!leaf.checkPrivateKey(createPrivateKey(key))) {
      return "is not the private key of the first certificate in tls.certFile";
    }
    return null;
  } catch (error) {
    return `does not parse as a private key: ${reason(error)}`;
  }
}

/**
 * Reads the `tls` files of every service of `config` and attaches them (`tls.material`), so
 * start-up and every reload see the files as they are now.
 *
 * @throws {ConfigError} with every problem of every service
 */
export function loadUpstreamTls(
  config: GatewayConfig,
  read: (path: string) => string = Deno.readTextFileSync,
): void {
  const problems: ConfigProblem[] = [];
  for (const service of Object.values(config.services)) {
    if (service.tls === null) continue;
    try {
      service.tls.material = readUpstreamTls(service.tls, `services.${service.name}.tls`, read);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

/** Turns Nagle off on a TCP socket (Deno's `TlsConn` has no such switch). */
function noDelay(conn: Deno.Conn): void {
  try {
    (conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
  } catch {
    // not a TCP socket, or closed
  }
}

/**
 * Opens a connection to an upstream origin: TCP for `http:` and `ws:`, TLS for `https:` and
 * `wss:` with the handshake completed (so a certificate that does not verify fails here, not
 * on the first read), ALPN `http/1.1`, SNI and verification against the URL's host, and the
 * client certificate when `tls` has one. Nagle is off, except with a client certificate (see
 * `open` below), where the HTTP/1.1 client sends a head together with the body bytes at hand.
 *
 * @param origin the upstream origin, e.g. `https://files.internal:8443`
 * @param tls trust and client certificate for TLS origins (ignored for plain ones)
 * @param signal gives up, closing a late socket, when it aborts
 * @throws {UpstreamError} `unreachable` for a TLS handshake that failed (the message says
 *   `TLS handshake with <host> failed`), else what `Deno.connect` threw
 * @example
 * ```ts
 * const conn = await connectUpstream("https://127.0.0.1:8443", { caCerts: [caPem] });
 * ```
 */
export async function connectUpstream(
  origin: string | URL,
  tls: UpstreamTlsOptions | null = null,
  signal?: AbortSignal,
): Promise<Deno.Conn> {
  const url = typeof origin === "string" ? new URL(origin) : origin;
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const connecting = open(hostname, port, secure ? tls ?? {} : null);
  const conn = signal === undefined ? await connecting : await abortable(connecting, signal)
    .catch((error) => {
      connecting.then((late) => closeQuietly(late), () => {});
      throw error;
    });
  if (!secure) return conn;
  try {
    const handshake = (conn as Deno.TlsConn).handshake();
    await (signal === undefined ? handshake : abortable(handshake, signal));
  } catch (error) {
    closeQuietly(conn);
    if (signal?.aborted) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new UpstreamError(
      "unreachable",
      `TLS handshake with ${url.host} failed: ${message}`,
      error,
    );
  }
  return conn;
}

/**
 * A TCP connection with Nagle off, upgraded to TLS when `tls` is given. `Deno.connectTls` has
 * no way to turn Nagle off (its `TlsConn` has no `setNoDelay`), and with it on, a request
 * head and the body chunk written after it waited for the upstream's delayed ACK: a streamed
 * POST over TLS took 44 ms instead of 0.8 ms on loopback. So TLS starts on our own TCP socket
 * (`Deno.startTls`), except with a client certificate, which only `Deno.connectTls` can present.
 */
async function open(
  hostname: string,
  port: number,
  tls: UpstreamTlsOptions | null,
): Promise<Deno.Conn> {
  const caCerts = tls?.caCerts?.length ? tls.caCerts : undefined;
  const alpnProtocols = ["http/1.1"];
  if (tls !== null && tls.cert !== undefined && tls.key !== undefined) {
    return await Deno.connectTls({
      hostname,
      port,
      caCerts,
      alpnProtocols,
      cert: tls.cert,
      key: tls.key,
    });
  }
  const tcp = await Deno.connect({ hostname, port });
  noDelay(tcp);
  if (tls === null) return tcp;
  try {
    return await Deno.startTls(tcp, { hostname, caCerts, alpnProtocols });
  } catch (error) {
    closeQuietly(tcp);
    throw error;
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}
