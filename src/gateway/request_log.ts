/**
 * The record phase's sink: each finished request goes to this instance's traffic stats (the
 * dashboard), the `http.server.request.duration` metric and the access log.
 *
 * @module
 */
import type { TrafficStats } from "../admin/traffic_stats.ts";
import type { ServedRequest } from "../proxy/request_path.ts";
import { type GatewayRecorders, logAccess, type Logger } from "../telemetry/mod.ts";
import { accessLogOn } from "../telemetry/access_log.ts";

/** Where finished requests are recorded. */
export interface RequestLogTargets {
  /** Per-service traffic of this instance. */
  traffic: TrafficStats;
  /** Metrics. */
  telemetry: Pick<GatewayRecorders, "serverRequest">;
  /** The access log (written at `info`). */
  logger: Logger;
  /** The breaker state a request's service has now, for the access log. */
  breakerState: (service: string) => string;
}

/**
 * Creates the sink.
 *
 * @example
 * ```ts
 * const onServed = createRequestLog({ traffic, telemetry, logger, breakerState });
 * createRequestPath({ ...deps, onServed });
 * ```
 */
export function createRequestLog(targets: RequestLogTargets): (served: ServedRequest) => void {
  const { traffic, telemetry, logger } = targets;
  return (served) => {
    const config = served.service?.config ?? null;
    const name = config?.name ?? null;
    if (name !== null) traffic.record(name, served.status, served.durationMs);
    telemetry.serverRequest({
      method: served.method,
      status: served.status,
      service: name,
      durationS: served.durationMs / 1000,
      scheme: served.scheme,
      route: config?.prefix,
      errorType: served.error,
    });
    // Off (level above info), the line's values are not gathered: the breaker state alone is
    // a look-up per request.
    if (!accessLogOn(logger)) return;
    logAccess(logger, {
      method: served.method,
      path: served.path,
      service: name,
      status: served.status,
      durationMs: served.durationMs,
      upstream: served.upstream,
      requestId: served.requestId,
      breakerState: name === null ? null : targets.breakerState(name),
      error: served.error,
      fallback: served.fallback,
      traceId: served.span?.traceId,
      spanId: served.span?.spanId,
      websocket: served.websocket,
    });
  };
}
