/**
 * The public Hono app: `/healthz`, `/readyz`, and every other path through the request path.
 *
 * @module
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import type { ConnectionFacts, RequestPath } from "../proxy/request_path.ts";
import type { Readiness } from "./status.ts";

/**
 * Creates the public app.
 *
 * @param readiness the answer of `/readyz`, computed per call
 * @example
 * ```ts
 * const app = createPublicApp(requestPath, () => readiness(lifecycle, instanceId, breaker, status));
 * serveHttp1({ port: 8080 }, app.fetch);
 * ```
 */
export function createPublicApp(requestPath: RequestPath, readiness: () => Readiness): Hono {
  const app = new Hono<{ Variables: { requestId: string } }>();
  app.use(requestId({ limitLength: 128 }));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => {
    const { httpStatus, body } = readiness();
    return c.json(body, httpStatus);
  });
  app.all("*", (c) =>
    requestPath.handle({
      raw: c.req.raw,
      requestId: c.get("requestId"),
      facts: c.env as ConnectionFacts | undefined,
    }));
  return app as unknown as Hono;
}
