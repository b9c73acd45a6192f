/**
 * The request path's WebSocket branch (README, "WebSocket"): a routed and admitted
 * `Upgrade: websocket` request is checked (RFC 6455 §4.2.1), given a slot of the service's
 * `websocket.maxConnections` (at most `websocket.maxConnectionsPerClient` per client address),
 * and sent to an upstream on a connection of its own. The upstream's answer is judged like any
 * attempt's (`./blame.ts`):
 *
 * - `101` with the right `Sec-WebSocket-Accept`: a success for the breaker; the client gets the
 *   101 and the connection is taken over from the server and relayed (`./websocket_relay.ts`)
 *   until both sides closed. How the session ends later (the upstream dying mid-session
 *   included) is not judged again: the call succeeded, and a long session's end says little
 *   about the upstream's health now (nginx and Envoy do not count it either);
 * - any other status goes to the client as an ordinary response: a 5xx in `failureStatuses`
 *   counts against the upstream, a 4xx describes the request;
 * - a refused or reset connection, a malformed answer, a 101 that does not prove it read the
 *   key, or no answer within `timeoutMs`: the upstream's failure, 502 or 504;
 * - a client that goes away during the handshake: nobody's verdict.
 *
 * @module
 */
import type { GatewayErrorCode } from "../problem.ts";
import type { AdmissionTicket } from "./admission.ts";
import { openAttemptScope } from "./attempt_scope.ts";
import type { ProxyObserver } from "./attempts.ts";
import { type AttemptVerdict, blameAttempt } from "./blame.ts";
import type { DeadlineScheduler } from "./deadlines.ts";
import { upstreamRequestHeaders } from "./headers.ts";
import type { ServiceRuntime } from "./service_runtime.ts";
import {
  acceptFor,
  clientSwitchHead,
  handshakeProblem,
  switchProblem,
  upstreamHandshake,
} from "./websocket_handshake.ts";
import { type RelayEnd, relayWebSocket, type SessionSummary } from "./websocket_relay.ts";
import type { WebSocketSessions } from "./websocket_sessions.ts";
import { openUpstream, refusalBody, type UpstreamHead, writeAll } from "./websocket_upstream.ts";
import { bridgeWebSocket } from "./websocket_bridge.ts";
import type { TakenConnection } from "../server/_takeover.ts";
import type { UpstreamTlsOptions } from "./upstream_tls.ts";

export { wantsWebSocket } from "./websocket_handshake.ts";
export type { SessionSummary } from "./websocket_relay.ts";

/** Hands the client's connection over after this request (the server's `ServeInfo.takeOver`). */
export type TakeOver = (run: (connection: TakenConnection) => Promise<void>) => void;

/** One upgrade request on its way to an upstream. */
export interface WebSocketRequest {
  /** The owning service. */
  service: ServiceRuntime;
  /** The method exactly as sent. */
  method: string;
  /** The client's request (headers and its abort signal). */
  raw: Pick<Request, "headers" | "signal">;
  /** Path and query for the upstream. */
  pathAndQuery: string;
  /** The request id. */
  requestId: string;
  /** The `x-breakwater-fallback` value when a fallback service took the request, else null. */
  fallback?: string | null;
  /** The client's address, for `X-Forwarded-For`. */
  clientIp: string | null;
  /** `http` or `https`, as the client spoke to the gateway. */
  scheme: string;
  /** When the gateway received the request, on `now`'s clock. */
  startedAt: number;
  /**
   * The server's hand-over of the connection; without it (embedded on `Deno.serve`) the client
   * side is upgraded with `Deno.upgradeWebSocket` and bridged message by message.
   */
  takeOver: TakeOver | undefined;
  /** The breaker admission the handshake's outcome is recorded on. */
  ticket: AdmissionTicket;
  /** Open sessions per service (the cap). */
  sessions: WebSocketSessions;
  /** Request deadlines. */
  deadlines: DeadlineScheduler;
  /** Metrics of attempts. */
  observer: ProxyObserver;
  /** Monotonic milliseconds. */
  now: () => number;
}

/** How the upgrade request ended, in the request path's terms. */
export type WebSocketOutcome =
  | {
    kind: "refused";
    refusal: { code: GatewayErrorCode; detail: string; service: string | null };
    upstream: string | null;
  }
  | { kind: "client_gone"; upstream: string | null }
  | { kind: "forwarded"; response: Response; upstream: string; finish: () => void }
  | {
    kind: "upgraded";
    upstream: string;
    ended: Promise<SessionSummary>;
    /** The response to return (`Deno.upgradeWebSocket`'s), when the server does not take over. */
    response?: Response;
  };

/**
 * Sends the handshake upstream and, on a 101, arranges the relay.
 *
 * @example
 * ```ts
 * if (facts.takeOver && wantsWebSocket(raw.headers) && service.config.websocket.enabled) {
 *   return await proxyWebSocket({ service, method, raw, ..., takeOver: facts.takeOver, ticket });
 * }
 * ```
 */
export async function proxyWebSocket(request: WebSocketRequest): Promise<WebSocketOutcome> {
  const { service, raw, sessions } = request;
  const { name } = service.config;
  const problem = handshakeProblem(request.method, raw.headers);
  if (problem !== null) {
    return {
      kind: "refused",
      refusal: { code: "bad_request", detail: problem, service: name },
      upstream: null,
    };
  }
  const { maxConnections, maxConnectionsPerClient } = service.config.websocket;
  // The TCP peer's address, as for X-Forwarded-For: a client's own X-Forwarded-For is not
  // trusted (the gateway appends to it), else any client could spread itself over made-up
  // addresses.
  const client = request.clientIp;
  const full = sessions.tryOpen(name, maxConnections, client, maxConnectionsPerClient);
  if (full !== null) {
    // Refused before any upstream is asked: nobody's verdict, the breaker hears nothing.
    return {
      kind: "refused",
      refusal: {
        code: "pool_saturated",
        detail: full === "service"
          ? `"${name}" has ${maxConnections} WebSocket connections open (websocket.maxConnections)`
          : `"${name}" has ${maxConnectionsPerClient} WebSocket connections open from ${client} ` +
            "(websocket.maxConnectionsPerClient)",
        service: name,
      },
      upstream: null,
    };
  }
  let slotKept = false;
  try {
    const outcome = await handshake(request);
    // Only a session keeps its slot; a refusal's body ("forwarded") finishes on its own.
    if (outcome.kind === "upgraded") {
      slotKept = true;
      outcome.ended.finally(() => sessions.release(name, client));
    }
    return outcome;
  } finally {
    if (!slotKept) sessions.release(name, client);
  }
}

async function handshake(request: WebSocketRequest): Promise<WebSocketOutcome> {
  const { service, raw, now } = request;
  const { config } = service;
  const endpoint = service.balancer.pick();
  const key = raw.headers.get("sec-websocket-key")!.trim();
  let headers = upstreamRequestHeaders(raw.headers, {
    clientIp: request.clientIp,
    proto: request.scheme,
    host: raw.headers.get("host"),
    requestId: request.requestId,
  });
  // Bridged message by message, frames are re-made here: no extension (permessage-deflate)
  // can be agreed with the upstream then.
  if (request.takeOver === undefined) {
    headers = headers.filter(([name]) => name !== "sec-websocket-extensions");
  }
  const bytes = upstreamHandshake(request.pathAndQuery, new URL(endpoint.origin).host, headers);
  const expected = await acceptFor(key);
  const scope = openAttemptScope(
    raw.signal,
    request.startedAt + config.timeoutMs,
    request.deadlines,
  );
  const sentAt = now();
  endpoint.inFlight++;
  let opened: Awaited<ReturnType<typeof openUpstream>> | null = null;
  let thrown: unknown = null;
  try {
    opened = await openUpstream(endpoint.origin, tlsOf(config), bytes, scope.signal);
  } catch (error) {
    thrown = error;
  } finally {
    endpoint.inFlight--;
    scope.close();
  }
  const durationMs = now() - sentAt;
  const badSwitch = opened !== null && opened.head.status === 101
    ? switchProblem(opened.head.headers, expected)
    : null;
  const verdict: AttemptVerdict = badSwitch !== null
    ? {
      source: "upstream",
      outcome: { error: "unreachable", durationMs },
      answer: "upstream_unreachable",
      message: badSwitch,
    }
    : blameAttempt({
      status: opened?.head.status ?? null,
      error: thrown,
      durationMs,
      clientGone: raw.signal.aborted,
      waitingOnClient: false,
    });
  request.ticket.record(verdict.outcome);
  if (verdict.source === "upstream") service.onAttempt(endpoint, verdict.outcome);
  request.observer.clientAttempt({
    service: config.name,
    address: endpoint.address,
    port: endpoint.port,
    method: "GET",
    status: badSwitch === null ? opened?.head.status : undefined,
    errorType: opened === null || badSwitch !== null
      ? (verdict.source === "upstream" ? verdict.outcome.error : verdict.answer ?? "client_gone")
      : undefined,
    durationS: durationMs / 1000,
  });
  const upstream = endpoint.origin;
  if (opened === null || badSwitch !== null) {
    if (opened !== null) closeQuietly(opened.conn);
    if (verdict.answer === null) return { kind: "client_gone", upstream };
    return {
      kind: "refused",
      refusal: { code: verdict.answer, detail: verdict.message, service: config.name },
      upstream,
    };
  }
  const { conn, head } = opened;
  if (head.status !== 101) {
    // Refused: an ordinary answer for the client, on a connection that served only it.
    const body = refusalBody(conn, head, () => {});
    const response = new Response(body, {
      status: head.status,
      statusText: head.statusText,
      headers: head.headers.filter(([name]) => !/^(content-length|transfer-encoding)$/i.test(name)),
    });
    return { kind: "forwarded", response, upstream, finish: () => {} };
  }
  if (request.takeOver === undefined) return bridge(request, conn, head, upstream);
  let resolveEnded!: (summary: SessionSummary) => void;
  const ended = new Promise<SessionSummary>((resolve) => resolveEnded = resolve);
  request.takeOver((client) =>
    relay(
      client,
      conn,
      head.rest,
      clientSwitchHead(head.headers, request.requestId, request.fallback ?? null),
      {
        idleTimeoutMs: config.websocket.idleTimeoutMs,
        now,
      },
    ).then(resolveEnded)
  );
  return { kind: "upgraded", upstream, ended };
}

/** Upgrades the client with `Deno.upgradeWebSocket` and bridges it to the upstream. */
function bridge(
  request: WebSocketRequest,
  conn: Deno.Conn,
  head: UpstreamHead,
  upstream: string,
): WebSocketOutcome {
  const protocol = head.headers.find(([name]) => name.toLowerCase() === "sec-websocket-protocol");
  let upgraded: { socket: WebSocket; response: Response };
  try {
    if (!(request.raw instanceof Request)) throw new TypeError("no Request to upgrade");
    upgraded = Deno.upgradeWebSocket(request.raw, protocol ? { protocol: protocol[1] } : {});
  } catch (error) {
    // No `Request` here, or one `Deno.upgradeWebSocket` refuses (headers it does not accept).
    closeQuietly(conn);
    const message = error instanceof Error ? error.message : String(error);
    return {
      kind: "refused",
      refusal: {
        code: "internal_error",
        detail: `the client's connection cannot be upgraded here: ${message}`,
        service: request.service.config.name,
      },
      upstream,
    };
  }
  const ended = bridgeWebSocket(upgraded.socket, conn, head.rest, {
    idleTimeoutMs: request.service.config.websocket.idleTimeoutMs,
    now: request.now,
  });
  return { kind: "upgraded", upstream, ended, response: upgraded.response };
}

/** Writes the 101 to the client and relays until both sides closed. */
async function relay(
  client: TakenConnection,
  conn: Deno.Conn,
  upstreamFirst: Uint8Array,
  switchHead: Uint8Array,
  options: { idleTimeoutMs: number; now: () => number },
): Promise<SessionSummary> {
  try {
    await client.write(switchHead);
  } catch {
    closeQuietly(conn);
    return { bytesFromClient: 0, bytesFromUpstream: 0, closeCode: null, ending: "client_gone" };
  }
  const upstreamEnd: RelayEnd = {
    read: (buffer) => conn.read(buffer),
    write: (bytes) => writeAll(conn, bytes),
    async closeWrite() {
      try {
        await conn.closeWrite();
      } catch {
        // closed or reset
      }
    },
    close: () => closeQuietly(conn),
  };
  const session = relayWebSocket(client, upstreamEnd, upstreamFirst, options);
  client.onShutdown = () => session.goAway(1001, "going away", "shutdown");
  return await session.ended;
}

/** The service's upstream TLS trust and client certificate (README, "Upstream TLS"), if any. */
function tlsOf(config: object): UpstreamTlsOptions | null {
  const tls = (config as { tls?: { material?: UpstreamTlsOptions } | null }).tls;
  return tls?.material ?? null;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}
