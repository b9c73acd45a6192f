/**
 * The public Hono app: `/healthz`, `/readyz`, and every other path through the request path.
 *
 * Mounted in another Hono app (`app.route("/gw", gateway.app)`), the request target still
 * carries the mount point, so the catch-all route strips the base path Hono matched it under
 * (`basePath` of `hono/route`) before routing. Reading it from Hono rather than taking a
 * `basePath` option keeps one source of truth: it follows `route()`, `basePath()` and mount
 * points with parameters (`/:tenant/gw`) without the embedder repeating the string.
 *
 * @module
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { basePath } from "hono/route";
import type { ConnectionFacts, RawRequest, RequestPath } from "../proxy/request_path.ts";
import type { DirectRequest } from "../server/http1_server.ts";
import { targetOfUrl } from "../routing/request_target.ts";
import { REQUEST_ID_MAX_LENGTH, requestIdGenerator, validRequestId } from "./request_id.ts";
import type { Readiness } from "./status.ts";

/** What the app reads once per request: the generation in force. */
export interface PublicAppTarget {
  /** The request path of the config in force. */
  requestPath: RequestPath;
  /** The answer of `/readyz`, computed per call. */
  readiness: () => Readiness;
}

/**
 * Creates the public app.
 *
 * @param current the request path and readiness in force, read once per request (a reload
 *   swaps what it returns; a request keeps what it got)
 * @example
 * ```ts
 * const app = createPublicApp(() => ({ requestPath, readiness: () => readiness(...) }));
 * serveHttp1({ port: 8080 }, app.fetch);
 * ```
 */
export function createPublicApp(current: () => PublicAppTarget): Hono {
  const nextId = requestIdGenerator();
  const app = new Hono<{ Variables: { requestId: string } }>();
  app.use(requestId({ limitLength: REQUEST_ID_MAX_LENGTH, generator: nextId }));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => {
    const { httpStatus, body } = current().readiness();
    return c.json(body, httpStatus);
  });
  app.all("*", (c) => {
    const facts = c.env as ConnectionFacts | undefined;
    return current().requestPath.handle({
      raw: c.req.raw,
      requestId: c.get("requestId"),
      facts: withoutMount(facts, c.req.raw.url, basePath(c)),
    });
  });
  // The gateway's own server calls `direct` first (a handler's entry point without a fetch
  // `Request`, src/server/http1_server.ts): a request for the request path skips building the
  // `Request` (~5 us) and Hono's dispatch (its context, the middleware chain and their
  // promises), with the same request id rule. `/healthz`, `/readyz` and anything Hono might
  // decode into them are declined and go through Hono. Mounted in another app (`app.route`),
  // only the routes above are copied and this entry point is not involved.
  const direct = (request: DirectRequest): Promise<Response> | null => {
    if (isAppRoute(request.target)) return null;
    return current().requestPath.handle({
      raw: lightRequest(request),
      requestId: validRequestId(request.headers.get("x-request-id")) ?? nextId(),
      facts: request,
    });
  };
  app.fetch = Object.assign(app.fetch, { direct });
  return app as unknown as Hono;
}

/**
 * What the request path reads of a request the server parsed: its headers and signal (the
 * method, target and body come from the facts); the url is a stand-in whose scheme is never
 * read, because the server's facts say whether the connection spoke TLS (plain port and the TLS
 * port's HTTP/1.1 connections alike).
 */
function lightRequest(request: DirectRequest): RawRequest {
  return {
    headers: request.headers,
    signal: request.signal,
    url: `http://localhost${request.target === "*" ? "/*" : request.target}`,
    method: request.method,
    // The body is in the facts (for every method), which the request path reads first.
    body: null,
  };
}

/** True when Hono's own routes may match `target` (its path may be percent-decoded to one). */
function isAppRoute(target: string): boolean {
  const query = target.indexOf("?");
  const path = query === -1 ? target : target.slice(0, query);
  return path === "/healthz" || path === "/readyz" || path.includes("%");
}

/**
 * The connection facts with the mount point taken off the request target; unchanged when the
 * app is not mounted. Only a whole leading segment match is stripped (`/gw` never eats `/gwx`).
 */
export function withoutMount(
  facts: ConnectionFacts | undefined,
  url: string,
  mount: string,
): ConnectionFacts | undefined {
  const base = mount.endsWith("/") ? mount.slice(0, -1) : mount;
  if (base === "" || base === "/") return facts;
  const target = facts?.target ?? targetOfUrl(url);
  if (!target.startsWith(base)) return facts;
  const rest = target.slice(base.length);
  if (rest !== "" && rest[0] !== "/" && rest[0] !== "?") return facts;
  const stripped = rest === "" ? "/" : rest[0] === "?" ? `/${rest}` : rest;
  return { ...facts, target: stripped };
}
