/**
 * A service's `fallback` (README, "Fallback while open"): what answers instead of 503
 * `breaker_open` while the service's breaker refuses requests. Either another service
 * (`{ "service": "orders-cache" }`) or a static answer (`{ "status": 200, "headers": {...},
 * "body": "..." }`). The shape is checked here; which services exist, and cycles, are checked
 * across services by {@link fallbackProblems} once every service is parsed.
 *
 * @module
 */
import { z } from "zod";
import type { ConfigProblem } from "./schema.ts";
import { TOKEN } from "../server/token.ts";

/** The largest static `body`, in UTF-8 bytes: an answer kept in memory for every request. */
export const MAX_FALLBACK_BODY_BYTES = 65536;

/** Service names, as `services` keys are written. */
const SERVICE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Headers a static answer may not set: the gateway frames the answer itself (RFC 9112 section 6),
 * hop-by-hop fields mean nothing in a stored answer (RFC 9110 section 7.6.1), and the gateway's
 * own headers would make the answer lie about where it came from.
 */
const FORBIDDEN_HEADERS = new Set([
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "x-request-id",
  "x-breakwater-error",
  "x-breakwater-fallback",
]);

/** Statuses whose responses have no content (RFC 9110 sections 15.3.5, 15.3.6, 15.4.5). */
const BODYLESS_STATUSES = new Set([204, 205, 304]);

/** Another service answers while this one's breaker is open (its own policy applies). */
export interface ServiceFallback {
  /** The name of the service to route to. */
  service: string;
}

/** A fixed answer while this service's breaker is open. */
export interface StaticFallback {
  /** The status to answer with (200-599). */
  status: number;
  /** Headers of the answer (names as written). */
  headers: Record<string, string>;
  /** The body, sent as UTF-8. */
  body: string;
}

/** A service's fallback after validation. */
export type FallbackConfig = ServiceFallback | StaticFallback;

/** True for a fallback that routes to another service. */
export function isServiceFallback(fallback: FallbackConfig): fallback is ServiceFallback {
  return "service" in fallback;
}

/** `services.<name>.fallback` as the file writes it; validated into a {@link FallbackConfig}. */
export const fallbackSchema = z.strictObject({
  service: z.string().regex(SERVICE_NAME, {
    error: "must be the name of another service (1-64 letters, digits, '_', '.' or '-')",
  }).optional(),
  status: z.number().int().min(200).max(599).optional(),
  // Names and values are checked below, with the other rules, so one run reports them all.
  headers: z.record(z.string(), z.string()).optional(),
  body: z.string().optional(),
}).superRefine((fallback, ctx) => {
  const hasService = fallback.service !== undefined;
  const hasStatus = fallback.status !== undefined;
  if (hasService && hasStatus) {
    ctx.addIssue({
      code: "custom",
      path: ["status"],
      message: 'either "service" (another service) or "status" (a static answer), not both',
    });
    return;
  }
  if (!hasService && !hasStatus) {
    ctx.addIssue({
      code: "custom",
      path: [],
      message: 'needs "service" (another service to route to) or "status" (a static answer)',
    });
    return;
  }
  if (hasService) {
    for (const key of ["headers", "body"] as const) {
      if (fallback[key] !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: [key],
          message: 'belongs to a static answer ("status"), not to a service fallback',
        });
      }
    }
    return;
  }
  const body = fallback.body ?? "";
  if (new TextEncoder().encode(body).length > MAX_FALLBACK_BODY_BYTES) {
    ctx.addIssue({
      code: "custom",
      path: ["body"],
      message: `must be at most ${MAX_FALLBACK_BODY_BYTES} bytes (UTF-8)`,
    });
  }
  if (body !== "" && BODYLESS_STATUSES.has(fallback.status!)) {
    ctx.addIssue({
      code: "custom",
      path: ["body"],
      message: `must be empty for status ${fallback.status} (RFC 9110: no content)`,
    });
  }
  const seen = new Set<string>();
  for (const [name, value] of Object.entries(fallback.headers ?? {})) {
    const lower = name.toLowerCase();
    if (!TOKEN.test(name)) {
      ctx.addIssue({
        code: "custom",
        path: ["headers", name],
        message: "is not a header name (a token, RFC 9110 section 5.1)",
      });
    } else if (FORBIDDEN_HEADERS.has(lower)) {
      ctx.addIssue({
        code: "custom",
        path: ["headers", name],
        message: "is set by the gateway (framing, hop-by-hop or its own header)",
      });
    } else if (seen.has(lower)) {
      ctx.addIssue({
        code: "custom",
        path: ["headers", name],
        message: "is given twice (header names are case-insensitive)",
      });
    }
    seen.add(lower);
    if (/[\r\n\0]/.test(value)) {
      ctx.addIssue({
        code: "custom",
        path: ["headers", name],
        message: "header values may not hold CR, LF or NUL (RFC 9110 section 5.5)",
      });
    }
  }
}).transform((fallback): FallbackConfig =>
  fallback.service !== undefined ? { service: fallback.service } : {
    status: fallback.status!,
    headers: fallback.headers ?? {},
    body: fallback.body ?? "",
  }
);

/**
 * The checks across services: a service fallback names a service that exists, not the service
 * itself, and no fallbacks form a cycle (`a` -> `b` -> `a`). The request path follows a
 * fallback one hop only, so a cycle could not loop, but it is always a mistake.
 *
 * @param services every parsed service's fallback, by name
 * @param allNames every name under `services`, parsed or not (a fallback to a service that
 *   failed validation is reported there, not as unknown)
 * @example
 * ```ts
 * fallbackProblems({ a: { fallback: { service: "b" } }, b: { fallback: { service: "a" } } }, ["a", "b"]);
 * // [{ path: "services.a.fallback.service", message: 'forms a cycle: "a" -> "b" -> "a"' }, ...]
 * ```
 */
export function fallbackProblems(
  services: Record<string, { fallback: FallbackConfig | null }>,
  allNames: readonly string[],
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const known = new Set(allNames);
  const next = (name: string): string | null => {
    const fallback = services[name]?.fallback ?? null;
    return fallback !== null && isServiceFallback(fallback) ? fallback.service : null;
  };
  for (const name of Object.keys(services)) {
    const target = next(name);
    if (target === null) continue;
    const path = `services.${name}.fallback.service`;
    if (target === name) {
      problems.push({ path, message: "names this service itself; a fallback is another service" });
      continue;
    }
    if (!known.has(target)) {
      problems.push({ path, message: `names no service ("${target}" is not under services)` });
      continue;
    }
    // Each service has at most one fallback, so following it from `name` either ends or comes
    // back to a service already passed; a cycle through `name` comes back to `name`.
    const chain = [name];
    let current: string | null = target;
    while (current !== null && !chain.includes(current)) {
      chain.push(current);
      current = next(current);
    }
    if (current === name) {
      const cycle = [...chain, name].map((service) => `"${service}"`).join(" -> ");
      problems.push({ path, message: `forms a cycle: ${cycle}` });
    }
  }
  return problems;
}
