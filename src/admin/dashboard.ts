/**
 * The operator dashboard on the admin port: `GET /` (the page), `GET /dashboard.js` and
 * `GET /dashboard.css` (its script and style, served as files so the page's
 * Content-Security-Policy can forbid every inline script and style), and
 * `GET /admin/dashboard.json` (the live data the page polls once a second). The page also reads
 * the fleet's timeline and instances from `GET /admin/audit` and `GET /admin/fleet`
 * (`fleet_routes.ts`) every few seconds: those are KV reads, so they are polled more slowly
 * than this instance's memory.
 *
 * No build step and no CDN: the page, script and style are string constants in this folder, so
 * the dashboard works offline and wherever the gateway is embedded.
 *
 * @module
 */
import type { Hono } from "hono";
import type { BreakerView } from "../breaker/mod.ts";
import type { PoolUsage, StatusViews, UpstreamState } from "../gateway/status.ts";
import type { TrafficStats } from "./traffic_stats.ts";
import { DASHBOARD_HTML } from "./dashboard_page.ts";
import { DASHBOARD_SCRIPT } from "./dashboard_script.ts";
import { DASHBOARD_STYLE } from "./dashboard_style.ts";

/** How many seconds of history the charts show. */
export const CHART_SECONDS = 120;

/** The window the headline rates and latencies are computed over. */
export const RECENT_SECONDS = 10;

/**
 * The page's policy: nothing inline, nothing from elsewhere. Script and style come from this
 * origin's `/dashboard.js` and `/dashboard.css`, data from `/admin/dashboard.json`; forms may
 * not navigate anywhere (the token dialog never submits, so the token cannot end up in a URL).
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** What the dashboard reads: the same sources the admin app has. */
export interface DashboardSource extends StatusViews {
  /** The fleet breaker (its views are the fleet's state from KV, or local when degraded). */
  breaker: {
    view(service: string): BreakerView;
    degraded(): boolean;
  };
  /** Per-second traffic per service (this instance). */
  traffic: TrafficStats;
  /** True when `BREAKWATER_ADMIN_TOKEN` is set, so the steering buttons can work. */
  writesEnabled: boolean;
  /** Wall clock in epoch milliseconds (default `Date.now`). */
  nowMs?: () => number;
}

/** A service's per-second traffic as parallel arrays (compact to poll once a second). */
export interface TrafficSeries {
  /** Start of the first second, epoch milliseconds. */
  startMs: number;
  /** Width of each point (always 1000). */
  stepMs: number;
  /** Requests answered per second. */
  requests: number[];
  /** 5xx answers per second. */
  errors: number[];
  /** Median latency per second in ms, null for seconds without requests. */
  p50Ms: (number | null)[];
  /** 99th percentile latency per second in ms, null for seconds without requests. */
  p99Ms: (number | null)[];
}

/** Headline numbers over the last {@link RECENT_SECONDS} seconds. */
export interface RecentTraffic {
  /** The window in seconds. */
  seconds: number;
  /** Average requests per second. */
  requestsPerSecond: number;
  /** Errors / requests, or null without requests. */
  errorRatio: number | null;
  /** p50 of the latest second in the window that had requests. */
  p50Ms: number | null;
  /** p99 of the latest second in the window that had requests. */
  p99Ms: number | null;
}

/** One service card's data. */
export interface DashboardService {
  /** The service name. */
  service: string;
  /** Its path prefix. */
  prefix: string;
  /** The fleet breaker's view of it. */
  breaker: BreakerView;
  /** This instance's pool usage. */
  pool: PoolUsage | null;
  /** This instance's view of its upstreams, with what their state means. */
  upstreams: UpstreamState[];
  /** Headline traffic numbers. */
  recent: RecentTraffic;
  /** Chart data. */
  traffic: TrafficSeries;
}

/** The body of `GET /admin/dashboard.json`. */
export interface DashboardSnapshot {
  /** Server time the snapshot was taken (epoch ms), so the page counts down without skew. */
  nowMs: number;
  /** True while this instance runs on local breakers because KV is unavailable. */
  degraded: boolean;
  /** True when steering can work (an admin token is configured). */
  writesEnabled: boolean;
  /** Services in config order. */
  services: DashboardService[];
}

function toSeries(points: ReturnType<TrafficStats["series"]>): TrafficSeries {
  return {
    startMs: points[0]?.atMs ?? 0,
    stepMs: 1000,
    requests: points.map((point) => point.requests),
    errors: points.map((point) => point.errors),
    p50Ms: points.map((point) => round(point.p50Ms)),
    p99Ms: points.map((point) => round(point.p99Ms)),
  };
}

/** Three significant digits are all a chart or a label can show; fewer bytes per poll. */
function round(value: number | null): number | null {
  return value === null ? null : Number(value.toPrecision(3));
}

function recentOf(series: TrafficSeries): RecentTraffic {
  const from = Math.max(0, series.requests.length - RECENT_SECONDS);
  let requests = 0;
  let errors = 0;
  let p50Ms: number | null = null;
  let p99Ms: number | null = null;
  for (let i = from; i < series.requests.length; i++) {
    requests += series.requests[i];
    errors += series.errors[i];
    if (series.requests[i] > 0) {
      p50Ms = series.p50Ms[i];
      p99Ms = series.p99Ms[i];
    }
  }
  const seconds = series.requests.length - from;
  return {
    seconds: RECENT_SECONDS,
    requestsPerSecond: seconds === 0 ? 0 : Number((requests / seconds).toPrecision(3)),
    errorRatio: requests === 0 ? null : Number((errors / requests).toPrecision(3)),
    p50Ms,
    p99Ms,
  };
}

/**
 * Builds the dashboard's data: breaker state per service from the fleet breaker, traffic, pool
 * and upstreams from this instance.
 *
 * @example
 * ```ts
 * const snapshot = dashboardSnapshot(source);
 * snapshot.services[0].breaker.state; // "closed"
 * ```
 */
export function dashboardSnapshot(source: DashboardSource): DashboardSnapshot {
  const pools = source.poolUsage();
  const upstreams = source.upstreamStates();
  return {
    nowMs: (source.nowMs ?? Date.now)(),
    degraded: source.breaker.degraded(),
    writesEnabled: source.writesEnabled,
    services: source.serviceNames.map((service) => {
      const traffic = toSeries(source.traffic.series(service, CHART_SECONDS));
      return {
        service,
        prefix: source.services[service]?.prefix ?? "",
        breaker: source.breaker.view(service),
        pool: pools[service] ?? null,
        upstreams: upstreams[service] ?? [],
        recent: recentOf(traffic),
        traffic,
      };
    }),
  };
}

/**
 * Adds the dashboard's routes to the admin app.
 *
 * @example
 * ```ts
 * const app = new Hono();
 * addDashboardRoutes(app, source);
 * ```
 */
export function addDashboardRoutes(app: Hono, source: DashboardSource): void {
  app.get("/", (c) =>
    c.body(DASHBOARD_HTML, 200, {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": DASHBOARD_CSP,
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
    }));
  app.get("/dashboard.js", (c) =>
    c.body(DASHBOARD_SCRIPT, 200, {
      "content-type": "text/javascript; charset=utf-8",
    }));
  app.get("/dashboard.css", (c) =>
    c.body(DASHBOARD_STYLE, 200, {
      "content-type": "text/css; charset=utf-8",
    }));
  app.get("/admin/dashboard.json", (c) => c.json(dashboardSnapshot(source)));
}
