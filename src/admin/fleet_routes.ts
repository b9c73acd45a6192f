/**
 * The incident routes of the admin app, read-only: `GET /admin/audit` (the fleet's timeline of
 * breaker transitions and operator actions, from KV) and `GET /admin/fleet` (the instances by
 * their heartbeats). Neither needs the admin token: like `GET /admin/breakers`, they show state,
 * and the admin port is loopback by default.
 *
 * @module
 */
import type { Hono } from "hono";
import { DEFAULT_AUDIT_READ, MAX_AUDIT_READ } from "../breaker/audit.ts";
import type { FleetBreaker } from "../breaker/mod.ts";
import { adminProblem } from "./problem.ts";

/** What the incident routes read. */
export interface FleetRoutesSource {
  /** The fleet breaker (its audit and fleet reads go to KV, or to memory while degraded). */
  breaker: Pick<FleetBreaker, "audit" | "fleet" | "degraded">;
  /** Configured services, to answer 404 for another name. */
  serviceNames: readonly string[];
}

/** Default `limit` of `GET /admin/audit`: the audit read's own default. */
export const DEFAULT_AUDIT_LIMIT = DEFAULT_AUDIT_READ;

const LIMIT_PROBLEM = `limit must be a whole number from 1 to ${MAX_AUDIT_READ}`;

/**
 * Parses `limit`: absent is the default, else a whole number in 1..{@link MAX_AUDIT_READ}; a
 * string for the 400 answer when it is not.
 */
export function parseAuditLimit(raw: string | undefined): number | string {
  if (raw === undefined || raw === "") return DEFAULT_AUDIT_LIMIT;
  if (!/^[0-9]{1,7}$/.test(raw)) return LIMIT_PROBLEM;
  const limit = Number(raw);
  return limit < 1 || limit > MAX_AUDIT_READ ? LIMIT_PROBLEM : limit;
}

/**
 * Adds `GET /admin/audit?service=&limit=` and `GET /admin/fleet` to the admin app.
 *
 * @example
 * ```ts
 * const app = new Hono();
 * addFleetRoutes(app, { breaker, serviceNames: ["users", "orders"] });
 * // GET /admin/audit?service=users&limit=20 -> { fleet: true, entries: [...] } newest first
 * ```
 */
export function addFleetRoutes(app: Hono, source: FleetRoutesSource): void {
  app.get("/admin/audit", async (c) => {
    const service = c.req.query("service");
    if (service !== undefined && service !== "" && !source.serviceNames.includes(service)) {
      return adminProblem(404, "No such service", service);
    }
    const limit = parseAuditLimit(c.req.query("limit"));
    if (typeof limit === "string") return adminProblem(400, "Invalid query", limit);
    const entries = await source.breaker.audit(service || undefined, limit);
    // `fleet: false`: KV is unavailable, and these are only the entries this instance made.
    return c.json({ fleet: !source.breaker.degraded(), entries });
  });

  app.get("/admin/fleet", async (c) => c.json(await source.breaker.fleet()));
}
