/**
 * The configuration file's schema (README, "Configuration"), validated with zod.
 *
 * Every number here is a default the README documents. Unknown keys are rejected everywhere so
 * a typo (`"timeoutMS"`) is an error instead of a silently ignored setting.
 *
 * @module
 */
import { z } from "zod";
import { parseStatusRanges, STATUS_RANGES_PATTERN } from "./status_ranges.ts";
import { fallbackProblems, fallbackSchema } from "./fallback_schema.ts";
import type { UpstreamTlsOptions } from "../proxy/upstream_tls.ts";

const port = z.number().int().min(0).max(65535);
const positiveMs = z.number().int().positive();
const nonNegativeMs = z.number().int().min(0);

/** An http(s) URL with no path beyond `/`, no query and no credentials: an upstream origin. */
const upstreamUrl = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" &&
      url.password === "" && url.search === "" && url.hash === "";
  } catch {
    return false;
  }
}, { error: "must be an http(s) URL without credentials, query or fragment" });

/** `"500-599"`, `"502,503,504"`, `"500-503,599"`: the statuses a breaker counts as failures. */
const statusRanges = z.string().regex(STATUS_RANGES_PATTERN, {
  error: 'must be status codes or ranges such as "500-599" or "502,503,504"',
});

const poolSchema = z.strictObject({
  maxConnections: z.number().int().positive().default(20),
  maxPending: z.number().int().min(0).default(100),
  queueTimeoutMs: positiveMs.default(1000),
  idleTimeoutMs: positiveMs.default(30000),
});

const breakerFields = {
  failureThreshold: z.number().int().positive().default(5),
  windowMs: positiveMs.default(10000),
  recoveryTimeoutMs: positiveMs.default(30000),
  maxRecoveryTimeoutMs: positiveMs.default(300000),
  halfOpenProbes: z.number().int().positive().default(1),
  failureStatuses: statusRanges.default("500-599"),
  slowCallMs: positiveMs.nullable().default(null),
  minInstances: z.number().int().positive().default(1),
  /**
   * Near the threshold, a failure holds this instance's new calls to the service until the
   * fleet has counted it (about one KV round trip): a fleet of any size then adds about one
   * failed call per instance before the trip reaches it (README, "The shared breaker").
   */
  holdBack: z.boolean().default(true),
};

/**
 * A service's breaker, `failureStatuses` read into ranges here, once. (`defaults.breaker` keeps
 * the text: it is merged into each service's object and parsed with it.)
 */
const breakerSchema = z.strictObject({
  ...breakerFields,
  failureStatuses: statusRanges.transform(parseStatusRanges).prefault("500-599"),
});

const retrySchema = z.strictObject({
  attempts: z.number().int().min(0).max(10).default(0),
  baseDelayMs: nonNegativeMs.default(50),
  maxDelayMs: nonNegativeMs.default(1000),
  budgetPercent: z.number().min(0).max(100).default(20),
  minRetriesPerSecond: z.number().min(0).default(3),
  /**
   * The percentage and the floor hold for the whole fleet (one floor, not one per instance),
   * counts exchanged through KV once a second; false: each instance its own budget.
   */
  fleetBudget: z.boolean().default(true),
  retryOn: z.array(z.number().int().min(100).max(599)).default([502, 503, 504]),
  maxBufferedBodyBytes: z.number().int().min(0).default(65536),
});

const healthCheckSchema = z.strictObject({
  path: z.string().startsWith("/", { error: "must start with /" }).default("/health"),
  intervalMs: positiveMs.default(5000),
  timeoutMs: positiveMs.default(1000),
  healthyThreshold: z.number().int().positive().default(2),
  unhealthyThreshold: z.number().int().positive().default(2),
});

const adaptiveConcurrencySchema = z.strictObject({
  enabled: z.boolean().default(false),
  minLimit: z.number().int().positive().default(1),
  /** Latency above which the limit shrinks, relative to the best latency seen (a gradient). */
  tolerance: z.number().min(1).default(2),
  sampleWindowMs: positiveMs.default(1000),
});

const outlierSchema = z.strictObject({
  consecutiveFailures: z.number().int().positive().default(5),
  baseEjectionMs: positiveMs.default(30000),
  maxEjectionMs: positiveMs.default(300000),
  maxEjectionPercent: z.number().min(0).max(100).default(50),
});

/** A file the gateway reads at start-up and reload (relative to its working directory). */
const tlsFile = z.string().min(1, { error: "must be a file path" }).nullable().default(null);

/**
 * TLS to a service's `https` upstreams (README, "Upstream TLS"): `caFile` is trusted besides
 * the default roots; `certFile` and `keyFile` (both or neither) are presented when an upstream
 * asks for a client certificate. The files are read by src/proxy/upstream_tls.ts, which puts
 * their contents in `material`. No switch skips verification: trust the upstream's CA instead.
 */
const upstreamTlsSchema = z.strictObject({
  caFile: tlsFile,
  certFile: tlsFile,
  keyFile: tlsFile,
}).superRefine((tls, context) => {
  if ((tls.certFile === null) !== (tls.keyFile === null)) {
    context.addIssue({
      code: "custom",
      path: [tls.certFile === null ? "certFile" : "keyFile"],
      message: tls.certFile === null
        ? "tls.keyFile needs tls.certFile too"
        : "tls.certFile needs tls.keyFile too",
    });
  }
}).transform((tls): UpstreamTlsConfig => tls);

/** A service's `tls` block, with the files' contents once they were read. */
export interface UpstreamTlsConfig {
  /** PEM CA bundle trusted besides the default roots. */
  caFile: string | null;
  /** PEM client certificate chain (mTLS). */
  certFile: string | null;
  /** PEM private key of `certFile`. */
  keyFile: string | null;
  /** The files' contents, read at load and reload (src/proxy/upstream_tls.ts). */
  material?: UpstreamTlsOptions & { digest: string };
}

const websocketSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Upgraded connections open at once per service (this instance); beyond: 503 pool_saturated. */
  maxConnections: z.number().int().positive().default(1000),
  /**
   * Of those, at most this many from one client address (the TCP peer, never X-Forwarded-For),
   * so one client cannot hold every slot (nginx's `limit_conn` by `$binary_remote_addr`);
   * beyond: 503 pool_saturated.
   */
  maxConnectionsPerClient: z.number().int().positive().default(100),
  /** No frame either way for this long: both sides get a close frame (1001). */
  idleTimeoutMs: positiveMs.default(300000),
});

/** The policy keys a service has and `defaults` may set (every one optional in `defaults`). */
const policyShape = {
  stripPrefix: z.boolean().default(false),
  timeoutMs: positiveMs.default(10000),
  pool: poolSchema.prefault({}),
  breaker: breakerSchema.prefault({}),
  retry: retrySchema.prefault({}),
  healthCheck: healthCheckSchema.nullable().default(null),
  outlierDetection: outlierSchema.nullable().default(null),
  adaptiveConcurrency: adaptiveConcurrencySchema.prefault({}),
  /**
   * `http1` (default): the byte-transparent HTTP/1.1 client over `Deno.connect`
   * (src/proxy/http1_client.ts); `fetch`: Deno's fetch with a pooled `Deno.createHttpClient`,
   * which the README lists with the deviations it keeps.
   */
  upstreamClient: z.enum(["fetch", "http1"]).default("http1"),
  /**
   * A response body that delivers no bytes for this long is cut (nginx's `proxy_read_timeout`);
   * `timeoutMs` bounds the wait for the response head, so a body that keeps flowing (server-sent
   * events, a long download) is never cut.
   */
  bodyIdleTimeoutMs: positiveMs.default(60000),
  /**
   * The `fetch` client only: fetch decodes gzip and br answers whenever the client accepts
   * them, so a body it decoded is cut (the client's connection closed, the failure the
   * upstream's) past this many decoded bytes; a compression bomb then costs at most this much.
   * The `http1` client never decodes.
   */
  maxDecodedBodyBytes: z.number().int().positive().default(104857600),
  /**
   * `%2F` / `%5C` in a request path (Envoy's `path_with_escaped_slashes_action`): `reject` (400),
   * `decode` (decode them, normalise, then route), `keep` (forward as sent, for upstreams that
   * need encoded slashes in IDs; a `..` or `.` hidden behind an encoded slash is still a 400).
   */
  escapedSlashes: z.enum(["reject", "decode", "keep"]).default("reject"),
  /** TLS trust and client certificate for `https` upstreams; null: the default roots only. */
  tls: upstreamTlsSchema.nullable().default(null),
  /**
   * `Upgrade: websocket` proxied to the upstreams (README, "WebSocket"); `true`/`false` is
   * short for `{ "enabled": ... }`.
   */
  websocket: z.union([
    z.boolean().transform((enabled) => websocketSchema.parse({ enabled })),
    websocketSchema,
  ]).prefault({}),
};

/** A path prefix: starts with `/`, no dot segments, no empty segments, no encoded bytes. */
const prefix = z.string().refine(
  (value) =>
    value.startsWith("/") && !value.includes("//") && !value.includes("%") &&
    !value.includes("\\") &&
    !value.split("/").some((segment) => segment === "." || segment === ".."),
  { error: "must be an absolute path such as /api/users (no //, %, \\ or dot segments)" },
).transform((value) => value.length > 1 && value.endsWith("/") ? value.slice(0, -1) : value);

/** One service as the file writes it (before `defaults` are merged in). */
export const serviceSchema = z.strictObject({
  prefix,
  upstreams: z.array(upstreamUrl).min(1, { error: "needs at least one upstream" }),
  ...policyShape,
  /**
   * What answers while the breaker refuses requests (README, "Fallback while open"): another
   * service or a static answer; null: 503 `breaker_open`. Not in `defaults`: another service
   * is a per-service choice, and a static answer merged key by key into a service fallback
   * would make neither.
   */
  fallback: fallbackSchema.nullable().default(null),
});

/** The `defaults` block: any service policy key, each optional. */
export const defaultsSchema = z.strictObject({
  stripPrefix: z.boolean().optional(),
  timeoutMs: positiveMs.optional(),
  pool: poolSchema.partial().optional(),
  breaker: z.strictObject(breakerFields).partial().optional(),
  retry: retrySchema.partial().optional(),
  healthCheck: healthCheckSchema.partial().nullable().optional(),
  outlierDetection: outlierSchema.partial().nullable().optional(),
  adaptiveConcurrency: adaptiveConcurrencySchema.partial().optional(),
  upstreamClient: z.enum(["fetch", "http1"]).optional(),
  bodyIdleTimeoutMs: positiveMs.optional(),
  maxDecodedBodyBytes: z.number().int().positive().optional(),
  escapedSlashes: z.enum(["reject", "decode", "keep"]).optional(),
  tls: z.strictObject({ caFile: tlsFile, certFile: tlsFile, keyFile: tlsFile }).partial()
    .nullable().optional(),
  websocket: z.union([z.boolean(), websocketSchema.partial()]).optional(),
});

/**
 * A file path, `:memory:`, or the http(s) URL of a KV Connect server. Only the form is checked
 * here: a server that does not answer at start-up is not a config error; the gateway starts on
 * local breakers (`/readyz` says degraded) and joins the fleet when KV answers, because a KV
 * outage must not take the edge down with it.
 */
const kvPath = z.string().min(1).refine((value) => {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return true; // a file path or :memory:
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}, { error: 'must be a file path, ":memory:", or the http(s) URL of a KV Connect server' })
  .nullable();

/**
 * Names that JavaScript objects carry on their prototype: a service called `__proto__` would be
 * dropped by an object assignment, and `constructor` would be found by a lookup of a service
 * that does not exist. Refused with a clear error rather than half-supported.
 */
const RESERVED_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));

/** The top level of the file, before the `defaults` are merged into each service. */
export const configFileSchema = z.strictObject({
  /** An editor's pointer to `breakwater.schema.json`; ignored by the gateway. */
  $schema: z.string().optional(),
  listen: z.strictObject({
    hostname: z.string().min(1).default("0.0.0.0"),
    port: port.default(8080),
    /**
     * HTTPS with HTTP/2 and HTTP/1.1 by ALPN (README, "TLS and HTTP/2"): PEM files, re-read on
     * every reload. Without `port`, `listen.port` itself speaks TLS; with one, `listen.port`
     * stays plain HTTP beside it.
     */
    tls: z.strictObject({
      certFile: z.string().min(1, { error: "must be a file path" }),
      keyFile: z.string().min(1, { error: "must be a file path" }),
      port: port.nullable().default(null),
      /** false: ALPN offers only http/1.1. */
      http2: z.boolean().default(true),
    }).nullable().default(null),
    /** The plain port answers 308 to `https://{host}:{tls.port}` (needs `tls.port`). */
    redirectToHttps: z.boolean().default(false),
  }).superRefine((listen, context) => {
    if (listen.redirectToHttps && (listen.tls === null || listen.tls.port === null)) {
      context.addIssue({
        code: "custom",
        path: ["redirectToHttps"],
        message: "needs listen.tls.port (a TLS port beside the plain one to redirect to)",
      });
    }
  }).prefault({}),
  /**
   * JavaScript workers serving the public port together (`reusePort`): `"auto"` (the default)
   * is the cgroup's CPU quota, else the core count, so an instance uses the cores it was given;
   * 1 is the single-threaded gateway (README, "Workers").
   */
  workers: z.union([z.literal("auto"), z.number().int().min(1).max(256)], {
    error: 'must be "auto" or a whole number from 1 to 256',
  }).default("auto"),
  admin: z.strictObject({
    hostname: z.string().min(1).default("127.0.0.1"),
    // Envoy's admin port: 9090 is Prometheus's own default, and both often share a host.
    port: port.default(9901),
  }).prefault({}),
  kv: z.strictObject({
    path: kvPath.default("./data/breakwater.kv"),
    syncIntervalMs: positiveMs.default(250),
  }).prefault({}),
  telemetry: z.strictObject({
    prometheus: z.boolean().default(true),
    otlp: z.strictObject({
      endpoint: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).nullable()
        .default(null),
      // null: OTEL_METRIC_EXPORT_INTERVAL, else 10000 (the SDK default).
      intervalMs: positiveMs.nullable().default(null),
    }).prefault({}),
  }).prefault({}),
  limits: z.strictObject({
    maxBodyBytes: z.number().int().positive().default(10485760),
    maxConnections: z.number().int().positive().default(100),
    /** A request head must arrive whole within this, from its first byte. */
    headerTimeoutMs: positiveMs.default(10000),
    /** A keep-alive connection with no request in progress is closed after this. */
    idleTimeoutMs: positiveMs.default(60000),
    /** A request body that delivers no bytes for this long is answered 408. */
    bodyIdleTimeoutMs: positiveMs.default(60000),
    /**
     * Client connections open at once on each port; one accepted beyond this is closed at once
     * (nginx's `worker_connections`). Each costs a file descriptor and ~16 KB; null: no cap.
     */
    maxClientConnections: z.number().int().positive().nullable().default(10000),
  }).prefault({}),
  shutdown: z.strictObject({
    drainDelayMs: nonNegativeMs.default(0),
    timeoutMs: positiveMs.default(25000),
  }).prefault({}),
  defaults: defaultsSchema.prefault({}),
  services: z.record(
    z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, {
      error: "service names are 1-64 letters, digits, '_', '.' or '-'",
    }),
    z.unknown(),
  ),
});

/** One service after defaults were merged and every key was filled. */
export type ServiceConfig = z.output<typeof serviceSchema> & {
  /** The key of the service in `services`. */
  name: string;
};

/** The breaker policy of one service. */
export type BreakerConfig = ServiceConfig["breaker"];
/** The retry policy of one service. */
export type RetryConfig = ServiceConfig["retry"];
/** The connection limiter settings of one service. */
export type PoolConfig = ServiceConfig["pool"];
/** Active health checking of one service's upstreams, or null when off. */
export type HealthCheckConfig = z.output<typeof healthCheckSchema>;
/** Passive outlier ejection of one service's upstreams. */
export type OutlierConfig = z.output<typeof outlierSchema>;
/** The adaptive concurrency limiter of one service. */
export type AdaptiveConcurrencyConfig = ServiceConfig["adaptiveConcurrency"];

/** The whole, validated configuration with every default filled. */
export type GatewayConfig = Omit<z.output<typeof configFileSchema>, "services" | "defaults"> & {
  services: Record<string, ServiceConfig>;
  /** `defaults.escapedSlashes`: the policy for a path no service owns until it is decoded. */
  escapedSlashes: "reject" | "decode" | "keep";
};

/** A configuration problem: where in the JSON, and what is wrong. */
export interface ConfigProblem {
  /** JSON path such as `services.users.upstreams[0]`; empty for the root. */
  path: string;
  /** What is wrong, in words. */
  message: string;
}

/** Thrown by {@link parseConfig} with every problem found. */
export class ConfigError extends Error {
  /** Every problem, one per offending JSON path. */
  readonly problems: ConfigProblem[];
  /** @param problems what was found wrong */
  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** `services.users.upstreams[0]: must be an http(s) URL`. */
export function formatProblem(problem: ConfigProblem): string {
  return `${problem.path || "(root)"}: ${problem.message}`;
}

function jsonPath(segments: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of segments) {
    if (typeof segment === "number") out += `[${segment}]`;
    else out += out === "" ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

function problemsOf(error: z.ZodError, base: readonly PropertyKey[] = []): ConfigProblem[] {
  return error.issues.map((issue) => {
    const path = [...base, ...issue.path];
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => ({
        path: jsonPath([...path, key]),
        message: "unknown key",
      }));
    }
    return [{
      path: jsonPath(path),
      message: issue.message.replace(/^Invalid (?:input|option): /, ""),
    }];
  }).flat();
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Service-level values win over `defaults`; nested policy objects merge key by key. */
function mergeDefaults(
  defaults: Record<string, unknown>,
  service: Record<string, unknown>,
): Record<string, unknown> {
  // Null-prototype copies: a key such as `__proto__` (JSON.parse makes it an own property)
  // stays a key that strict validation reports, instead of silently becoming a prototype.
  const merged: Record<string, unknown> = Object.assign(Object.create(null), defaults);
  for (const [key, value] of Object.entries(service)) {
    const inherited = merged[key];
    merged[key] = isPlainObject(inherited) && isPlainObject(value)
      ? Object.assign(Object.create(null), inherited, value)
      : value;
  }
  return merged;
}

/** Paths the gateway answers itself on the public port; no prefix may cover them. */
const RESERVED_PATHS = ["/healthz", "/readyz"];

function routingProblems(services: Record<string, ServiceConfig>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const owners = new Map<string, string>();
  for (const [name, service] of Object.entries(services)) {
    const owner = owners.get(service.prefix);
    if (owner !== undefined) {
      problems.push({
        path: `services.${name}.prefix`,
        message: `"${service.prefix}" is already the prefix of service "${owner}"`,
      });
    } else {
      owners.set(service.prefix, name);
    }
    // "/" is a catch-all that the health routes are matched before; any other prefix that
    // covers them would make them unreachable or ambiguous.
    if (service.prefix === "/") continue;
    for (const reserved of RESERVED_PATHS) {
      if (reserved === service.prefix || reserved.startsWith(service.prefix + "/")) {
        problems.push({
          path: `services.${name}.prefix`,
          message: `"${service.prefix}" would hide the gateway's ${reserved} route`,
        });
      }
    }
  }
  return problems;
}

/**
 * Validates a configuration object (the parsed JSON file) and fills every default.
 *
 * @throws {ConfigError} with one problem per offending JSON path
 * @example
 * ```ts
 * const config = parseConfig({ services: { users: { prefix: "/api/users", upstreams: ["http://127.0.0.1:9001"] } } });
 * config.services.users.breaker.failureThreshold; // 5
 * ```
 */
export function parseConfig(input: unknown): GatewayConfig {
  const reserved = reservedNameProblems(input);
  const top = configFileSchema.safeParse(input);
  if (!top.success || reserved.length > 0) {
    // Still check the services so one run reports every problem, not the first layer only.
    const problems = [...reserved, ...(top.success ? [] : problemsOf(top.error))];
    if (isPlainObject(input) && isPlainObject(input.services)) {
      const defaults = isPlainObject(input.defaults) ? input.defaults : {};
      problems.push(...serviceProblems(defaults, input.services).problems);
    }
    throw new ConfigError(dedupe(problems));
  }
  const { defaults, services: rawServices, ...rest } = top.data;
  const { services, problems } = serviceProblems(defaults, rawServices);
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...rest, services, escapedSlashes: defaults.escapedSlashes ?? "reject" };
}

/** Service names that are Object.prototype properties (zod's record would drop `__proto__`). */
function reservedNameProblems(input: unknown): ConfigProblem[] {
  if (!isPlainObject(input) || !isPlainObject(input.services)) return [];
  return Object.keys(input.services).filter((name) => RESERVED_NAMES.has(name)).map((name) => ({
    path: `services.${name}`,
    message: "is a reserved name (every JavaScript object has a property of that name)",
  }));
}

function dedupe(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((problem) => {
    const line = formatProblem(problem);
    if (seen.has(line)) return false;
    seen.add(line);
    return true;
  });
}

function serviceProblems(
  defaults: Record<string, unknown>,
  rawServices: Record<string, unknown>,
): { services: Record<string, ServiceConfig>; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  // Null prototype: a lookup of a name that is not a service never finds an Object method.
  const services: Record<string, ServiceConfig> = Object.create(null);
  if (Object.keys(rawServices).length === 0) {
    problems.push({ path: "services", message: "needs at least one service" });
  }
  for (const [name, raw] of Object.entries(rawServices)) {
    if (!isPlainObject(raw)) {
      problems.push({ path: `services.${name}`, message: "must be an object" });
      continue;
    }
    const parsed = serviceSchema.safeParse(mergeDefaults(defaults, raw));
    if (!parsed.success) {
      problems.push(...problemsOf(parsed.error, ["services", name]));
      continue;
    }
    if (parsed.data.retry.maxDelayMs < parsed.data.retry.baseDelayMs) {
      problems.push({
        path: `services.${name}.retry.maxDelayMs`,
        message: "must not be below retry.baseDelayMs",
      });
    }
    if (RESERVED_NAMES.has(name)) continue; // reported by the file schema
    services[name] = { ...parsed.data, name };
  }
  problems.push(...routingProblems(services));
  problems.push(...fallbackProblems(services, Object.keys(rawServices)));
  return { services, problems };
}
