/**
 * The admin listener: breaker state and operator actions, `/metrics`, and the dashboard.
 * It is a separate Hono app on a separate port (loopback by default), so nothing of it is
 * reachable through the public port.
 *
 * @module
 */
import { Hono } from "hono";
import { timingSafeEqual } from "hono/utils/buffer";
import { z } from "zod";
import { DEFAULT_FORCE_LABEL } from "../breaker/audit.ts";
import type { FleetBreaker } from "../breaker/mod.ts";
import { type GatewayTelemetry, type Logger, PROMETHEUS_CONTENT_TYPE } from "../telemetry/mod.ts";
import type { StatusViews } from "../gateway/status.ts";
import type { TrafficStats } from "./traffic_stats.ts";
import { addDashboardRoutes } from "./dashboard.ts";
import { addFleetRoutes } from "./fleet_routes.ts";
import { adminBody, adminProblem } from "./problem.ts";

/** What the admin app reads and steers. */
export interface AdminAppOptions {
  /** The fleet breaker. */
  breaker: FleetBreaker;
  /** The metrics source for `/metrics`. */
  telemetry: GatewayTelemetry;
  /** `BREAKWATER_ADMIN_TOKEN`; null turns the write routes off (403). */
  adminToken: string | null;
  /** Pools, upstreams and static facts per service (this instance). */
  status: StatusViews;
  /** Per-service traffic of this instance. */
  traffic: TrafficStats;
  /** Where operator actions are logged (never the token). */
  logger: Logger;
  /**
   * Re-reads and applies the config for `POST /admin/reload`; an `ok: false` answer is a
   * refused file (400 with its problems).
   */
  reload?: () => Promise<
    { ok: true; added: string[]; removed: string[]; changed: string[]; ignored: string[] } | {
      ok: false;
      problems: string[];
    }
  >;
}

/**
 * The caller label of a forced change, as the audit timeline records it. The admin API only
 * authenticates "holds the admin token" (one shared secret), so the label is the caller's own
 * word for who they are: kept short and printable, and the log line next to it carries the
 * peer address the request came from.
 */
const byLabel = z.string()
  .min(1, "must not be empty")
  .max(64, "at most 64 characters")
  // Unicode control characters (C0, DEL and C1: a terminal escape, a forged log line), format
  // characters (bidi overrides that spoof the timeline, zero-width ones that hide), line and
  // paragraph separators and lone surrogates: none of them belongs in a name people read.
  .regex(/^[^\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]*$/u, "no control characters")
  .refine((label) => label.trim() !== "", "must not be blank");

const actionSchema = z.strictObject({
  action: z.enum(["open", "close", "reset"]),
  by: byLabel.optional(),
});

const ACTION_SHAPE =
  'The body must be {"action": "open" | "close" | "reset", "by"?: "who (1-64 printable characters)"}';

/** The peer address the own HTTP server or `Deno.serve` passes as the request's env. */
function peerOf(env: unknown): string | undefined {
  const addr = (env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr;
  return addr?.hostname === undefined ? undefined : `${addr.hostname}:${addr.port}`;
}

/**
 * Checks `Authorization: Bearer <token>` in constant time (Hono's `timingSafeEqual` hashes
 * both sides first, so neither length nor content leaks through timing).
 */
async function authorized(header: string | undefined, token: string): Promise<boolean> {
  if (header === undefined) return false;
  const match = /^Bearer[ ]+(.+)$/i.exec(header);
  if (match === null) return false;
  return await timingSafeEqual(token, match[1].trim());
}

/**
 * Creates the admin app.
 *
 * @example
 * ```ts
 * Deno.serve({ hostname: "127.0.0.1", port: 9090 }, createAdminApp(options).fetch);
 * ```
 */
export function createAdminApp(options: AdminAppOptions): Hono {
  const { breaker, telemetry, adminToken, logger, status } = options;
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    c.header("cache-control", "no-store");
    c.header("x-content-type-options", "nosniff");
  });

  app.get("/admin/breakers", (c) => {
    const pools = status.poolUsage();
    const upstreams = status.upstreamStates();
    return c.json({
      degraded: breaker.degraded(),
      services: breaker.views().map((view) => ({
        ...view,
        pool: pools[view.service],
        upstreams: upstreams[view.service] ?? [],
      })),
    });
  });

  /** 403 while writes are off, 401 for a missing or wrong token, null when allowed. */
  const refuseWrite = async (header: string | undefined): Promise<Response | null> => {
    if (adminToken === null || adminToken === "") {
      return adminProblem(403, "Admin writes are disabled", "set BREAKWATER_ADMIN_TOKEN to enable");
    }
    if (!(await authorized(header, adminToken))) {
      const response = adminProblem(401, "Missing or wrong bearer token");
      response.headers.set("www-authenticate", 'Bearer realm="breakwater-admin"');
      return response;
    }
    return null;
  };

  app.post("/admin/reload", async (c) => {
    const refusal = await refuseWrite(c.req.header("authorization"));
    if (refusal !== null) return refusal;
    if (options.reload === undefined) return adminProblem(404, "Reload is not available");
    const result = await options.reload();
    if (!result.ok) {
      logger.info("reload refused", { problems: result.problems.length });
      return c.json({ ...adminBody(400, "The config is invalid"), problems: result.problems }, 400);
    }
    const { added, removed, changed, ignored } = result;
    return c.json({ added, removed, changed, ignored });
  });

  app.post("/admin/breakers/:service", async (c) => {
    const refusal = await refuseWrite(c.req.header("authorization"));
    if (refusal !== null) return refusal;
    const service = c.req.param("service");
    if (!status.serviceNames.includes(service)) {
      return adminProblem(404, "No such service", service);
    }
    let parsed;
    try {
      parsed = actionSchema.safeParse(await c.req.json());
    } catch {
      return adminProblem(400, "The body must be JSON");
    }
    if (!parsed.success) {
      const field = parsed.error.issues[0]?.path.join(".") || "body";
      return adminProblem(400, ACTION_SHAPE, `${field}: ${parsed.error.issues[0]?.message}`);
    }
    const { action } = parsed.data;
    // A pasted token must not end up in KV for a week and on every dashboard.
    const token = adminToken?.trim() ?? "";
    if (parsed.data.by !== undefined && token !== "" && parsed.data.by.includes(token)) {
      return adminProblem(400, "by must not be the admin token");
    }
    const by = parsed.data.by?.trim() ?? DEFAULT_FORCE_LABEL;
    const view = await breaker.force(service, action, { by });
    // The audit entry is the fleet's record; this line is the instance's (and carries the peer).
    logger.info("breaker forced", {
      service,
      action,
      by,
      peer: peerOf(c.env),
      state: view.state,
      fleet: !view.degraded,
    });
    return c.json(view);
  });

  addFleetRoutes(app, { breaker, serviceNames: status.serviceNames });

  addDashboardRoutes(app, {
    ...status,
    breaker,
    traffic: options.traffic,
    writesEnabled: adminToken !== null && adminToken !== "",
  });

  app.get("/metrics", async (c) => {
    const text = await telemetry.prometheusText();
    if (text === null) return adminProblem(404, "Prometheus export is off");
    return c.body(text, 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
  });

  return app;
}
