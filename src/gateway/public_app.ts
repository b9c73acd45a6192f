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
import type { ConnectionFacts, RequestPath } from "../proxy/request_path.ts";
import { targetOfUrl } from "../routing/request_target.ts";
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
  const app = new Hono<{ Variables: { requestId: string } }>();
  app.use(requestId({ limitLength: 128 }));
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
  return app as unknown as Hono;
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
