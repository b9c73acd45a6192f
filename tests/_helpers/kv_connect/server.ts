/**
 * A KV Connect server for tests: the protocol of denoland/denokv `proto/kv-connect.md` (metadata
 * exchange, `snapshot_read`, `atomic_write`, `watch`), served over a real Deno KV file, so that
 * gateway processes open it with `Deno.openKv("http://127.0.0.1:PORT")` exactly as they would
 * open `denokv` or Deno Deploy's KV on another host. Test infrastructure, not a product part.
 *
 * What it answers, as denokv's own server does:
 *
 * - `POST /` (metadata exchange): `Authorization: Bearer <access token>` checked in constant
 *   time (401 otherwise); protocol version 3 if the client supports it, else 2 (a client that
 *   offers only 1, or no body, gets 400); one `strong` endpoint `/v2`; a data-path token of its
 *   own (derived from the access token and the database id, so it survives a restart) valid
 *   until `expiresAt`.
 * - `POST /v2/snapshot_read`, `/v2/atomic_write`, `/v2/watch`: the data-path token, an
 *   `x-denokv-version` of 2 or 3 and the database's `x-denokv-database-id` are required
 *   (401 / 400). Protobuf in and out; a malformed message is 400 with a plain-text reason.
 * - `watch` streams `u32 little-endian length + WatchOutput` frames: the state of every key at
 *   once, then each change, and an empty frame every `watchPingIntervalMs` as a keep-alive.
 * - Enqueues are refused with 400 (KV Connect clients cannot listen to queues anyway).
 * - `GET /_stats` (not KV Connect): the {@link KvConnectStats} counters as JSON.
 *
 * @module
 */
import {
  decodeAtomicWrite,
  decodeSnapshotRead,
  decodeWatch,
  encodeAtomicWriteOutput,
  encodeSnapshotReadOutput,
  encodeWatchOutput,
} from "./_messages.ts";
import { ProtobufError } from "./_protobuf.ts";
import { BadRequestError, createKvConnectStore, type KvConnectStore } from "./_store.ts";

/** Options of {@link startKvConnectServer}. */
export interface KvConnectServerOptions {
  /** The Deno KV (SQLite) file to serve; created when missing. */
  path: string;
  /** The access token clients must present (`DENO_KV_ACCESS_TOKEN` on their side). */
  accessToken: string;
  /** Default `127.0.0.1`. */
  hostname?: string;
  /** Default 0 (any free port). Give the old port to restart "the same host". */
  port?: number;
  /** How long the metadata a client receives stays valid. Default one hour. */
  metadataTtlMs?: number;
  /** Keep-alive frame interval on watch streams. Default 5000 (as denokv). */
  watchPingIntervalMs?: number;
  /** Receives one line per refused request and per server error. Default: nothing. */
  log?: (line: string) => void;
}

/** Requests served, by route, and what was refused. */
export interface KvConnectStats {
  /** Metadata exchanges answered 200. */
  metadata: number;
  /** `snapshot_read` calls answered 200. */
  snapshotRead: number;
  /** `atomic_write` calls answered 200. */
  atomicWrite: number;
  /** `watch` streams opened. */
  watch: number;
  /** Watch streams open right now. */
  openWatches: number;
  /** Requests refused with 401 (wrong or missing token). */
  unauthorized: number;
  /** Requests refused with another 4xx. */
  badRequest: number;
}

/** A running server. */
export interface KvConnectServer {
  /** What clients pass to `Deno.openKv`: `http://HOST:PORT`. */
  url: string;
  /** The port it listens on. */
  port: number;
  /** The database's id (stable for the file). */
  databaseId: string;
  /** Counters since start. */
  stats(): KvConnectStats;
  /** Ends every watch stream, stops listening and closes the KV file. Idempotent. */
  close(): Promise<void>;
}

const PROTOBUF = { "content-type": "application/x-protobuf" };

function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain" } });
}

/** Constant-time comparison, so a test server does not teach bad habits. */
function sameToken(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  let difference = a.length ^ b.length;
  for (let index = 0; index < b.length; index++) difference |= (a[index] ?? 0) ^ b[index];
  return difference === 0;
}

function bearer(request: Request): string | null {
  const header = request.headers.get("authorization");
  const match = header?.match(/^bearer ([^ ]+)$/i);
  return match ? match[1] : null;
}

async function deriveDataToken(accessToken: string, databaseId: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(accessToken),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(databaseId));
  return Array.from(new Uint8Array(mac), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function frame(message: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(4 + message.length);
  new DataView(out.buffer).setUint32(0, message.length, true);
  out.set(message, 4);
  return out;
}

/**
 * Starts a KV Connect server over a Deno KV file.
 *
 * @example
 * ```ts
 * const server = await startKvConnectServer({ path: "/tmp/fleet.kv", accessToken: "s3cret-token" });
 * Deno.env.set("DENO_KV_ACCESS_TOKEN", "s3cret-token");
 * const kv = await Deno.openKv(server.url);
 * await kv.set(["a"], 1);
 * kv.close();
 * await server.close();
 * ```
 */
export async function startKvConnectServer(
  options: KvConnectServerOptions,
): Promise<KvConnectServer> {
  const log = options.log ?? (() => {});
  const metadataTtlMs = options.metadataTtlMs ?? 3_600_000;
  const pingIntervalMs = options.watchPingIntervalMs ?? 5000;
  const kv = await Deno.openKv(options.path);
  const store: KvConnectStore = createKvConnectStore(kv);
  let databaseId: string;
  let dataToken: string;
  try {
    databaseId = await store.databaseId();
    dataToken = await deriveDataToken(options.accessToken, databaseId);
  } catch (error) {
    kv.close();
    throw error;
  }
  const stats: KvConnectStats = {
    metadata: 0,
    snapshotRead: 0,
    atomicWrite: 0,
    watch: 0,
    openWatches: 0,
    unauthorized: 0,
    badRequest: 0,
  };
  const stopWatches = new Set<() => void>();
  let closing: Promise<void> | null = null;

  const refuse = (status: number, reason: string, request: Request): Response => {
    if (status === 401) stats.unauthorized++;
    else stats.badRequest++;
    log(`${status} ${new URL(request.url).pathname}: ${reason}`);
    return text(status, reason);
  };

  async function metadata(request: Request): Promise<Response> {
    let supported: unknown;
    try {
      const body = await request.text();
      supported = body === "" ? undefined : JSON.parse(body)?.supportedVersions;
    } catch {
      return refuse(400, "The metadata exchange body is not valid JSON.", request);
    }
    if (supported === undefined) {
      return refuse(
        400,
        "The server requires at least protocol version 2. Use Deno 1.38.0 or newer.",
        request,
      );
    }
    if (!Array.isArray(supported) || !supported.every((v) => typeof v === "number")) {
      return refuse(400, "supportedVersions must be an array of numbers.", request);
    }
    const token = bearer(request);
    if (token === null) return refuse(401, "Malformed authorization header.", request);
    if (!sameToken(token, options.accessToken)) {
      return refuse(401, "Invalid access token.", request);
    }
    const version = supported.includes(3) ? 3 : supported.includes(2) ? 2 : null;
    if (version === null) {
      return refuse(
        400,
        "The server could not negotiate a protocol version. The server requires protocol version 2 or 3.",
        request,
      );
    }
    stats.metadata++;
    return Response.json({
      version,
      databaseId,
      endpoints: [{ url: "/v2", consistency: "strong" }],
      token: dataToken,
      expiresAt: new Date(Date.now() + metadataTtlMs).toISOString(),
    });
  }

  /** The data-path checks of the spec; null when the request may proceed. */
  function dataPathProblem(request: Request): Response | null {
    const version = request.headers.get("x-denokv-version");
    if (version !== "2" && version !== "3") {
      return refuse(400, "Expected protocol version 2 or 3.", request);
    }
    const token = bearer(request);
    if (token === null) return refuse(401, "Malformed authorization header.", request);
    if (!sameToken(token, dataToken)) return refuse(401, "Invalid access token.", request);
    if (request.headers.get("x-denokv-database-id")?.toLowerCase() !== databaseId) {
      return refuse(400, "Invalid database id.", request);
    }
    return null;
  }

  function watchResponse(keys: Uint8Array[]): Response {
    const outputs = store.watch(keys).getReader();
    let ping: ReturnType<typeof setInterval> | undefined;
    let stop = () => {};
    stats.watch++;
    stats.openWatches++;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let ended = false;
        stop = () => {
          if (ended) return;
          ended = true;
          clearInterval(ping);
          stopWatches.delete(stop);
          stats.openWatches--;
          outputs.cancel().catch(() => {});
          try {
            controller.close();
          } catch {
            // The client went away first.
          }
        };
        stopWatches.add(stop);
        ping = setInterval(() => {
          try {
            controller.enqueue(frame(new Uint8Array(0)));
          } catch {
            stop();
          }
        }, pingIntervalMs);
        (async () => {
          try {
            while (!ended) {
              const { value, done } = await outputs.read();
              if (done) break;
              controller.enqueue(frame(encodeWatchOutput(value)));
            }
          } catch (error) {
            if (!ended) log(`watch failed: ${error instanceof Error ? error.message : error}`);
          }
          stop();
        })();
      },
      cancel() {
        stop();
      },
    });
    return new Response(body, { headers: { "content-type": "application/octet-stream" } });
  }

  async function dataPath(route: string, request: Request): Promise<Response> {
    const refused = dataPathProblem(request);
    if (refused !== null) return refused;
    const body = new Uint8Array(await request.arrayBuffer());
    try {
      switch (route) {
        case "snapshot_read": {
          const output = await store.snapshotRead(decodeSnapshotRead(body));
          stats.snapshotRead++;
          return new Response(encodeSnapshotReadOutput(output), { headers: PROTOBUF });
        }
        case "atomic_write": {
          const output = await store.atomicWrite(decodeAtomicWrite(body));
          stats.atomicWrite++;
          return new Response(encodeAtomicWriteOutput(output), { headers: PROTOBUF });
        }
        default:
          return watchResponse(decodeWatch(body));
      }
    } catch (error) {
      if (error instanceof ProtobufError) {
        return refuse(400, `Request protobuf is invalid: ${error.message}.`, request);
      }
      if (error instanceof BadRequestError) return refuse(400, error.message, request);
      // 5xx: the client retries with backoff, as it would against a struggling denokv.
      log(`500 ${route}: ${error instanceof Error ? error.stack : error}`);
      return text(500, "An internal server error occurred.");
    }
  }

  const server = Deno.serve(
    { hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0, onListen() {} },
    (request) => {
      if (closing !== null) return text(503, "The server is shutting down.");
      const { pathname } = new URL(request.url);
      // Not part of KV Connect: lets a test that runs the server as a child process see how
      // many watch streams its clients hold open.
      if (request.method === "GET" && pathname === "/_stats") return Response.json(stats);
      if (request.method !== "POST") return text(405, "Only POST is served.");
      if (pathname === "/") return metadata(request);
      const route = pathname.match(/^\/v2\/(snapshot_read|atomic_write|watch)$/)?.[1];
      if (route === undefined) return text(404, "Resource not found.");
      return dataPath(route, request);
    },
  );

  return {
    url: `http://${server.addr.hostname}:${server.addr.port}`,
    port: server.addr.port,
    databaseId,
    stats: () => ({ ...stats }),
    close() {
      closing ??= (async () => {
        // Watch streams never end on their own; the server's graceful shutdown would wait.
        for (const stop of [...stopWatches]) stop();
        await server.shutdown();
        kv.close();
      })();
      return closing;
    },
  };
}
