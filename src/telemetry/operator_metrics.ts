/**
 * The instruments an operator alerts on beyond request rates: KV degraded mode, upstream
 * availability and ejections, and retries the budget refused. Gauges read their sources at
 * collection time ({@link ObservedSources}), so the request path pays nothing for them.
 *
 * @module
 */
import type { Attributes, Meter } from "@opentelemetry/api";
import { ATTR, type ObservedSources } from "./instruments.ts";

/** Recorders of the operator instruments (synchronous, allocation-light). */
export interface OperatorRecorders {
  /**
   * An upstream's availability changed (health checks, outlier detection). A change to
   * unavailable counts one `breakwater.upstream.ejections` with its `reason`
   * (`outlier_ejected`, `health_check_failed`, ...); a return to service counts nothing (the
   * `breakwater.upstream.available` gauge shows it).
   */
  upstreamAvailability(service: string, upstream: string, available: boolean, reason: string): void;
  /**
   * A retry the request path wanted but did not send (`breakwater.retries.refused`): `budget`
   * when the retry budget was spent, `deadline` when the backoff would outlast `timeoutMs`.
   */
  retryRefused(service: string, reason: string): void;
  /**
   * A request answered by the service's fallback while its breaker refused it
   * (`breakwater.fallback.responses`): `kind` is `static` or `service` (README, "Fallback while
   * open").
   */
  fallback(service: string, kind: string): void;
}

/** Above this many cached attribute sets, new combinations are built per call. */
const MAX_CACHED = 10_000;

function cached(build: (key: string) => Attributes): (key: string) => Attributes {
  const cache = new Map<string, Attributes>();
  return (key) => {
    let attributes = cache.get(key);
    if (attributes === undefined) {
      attributes = Object.freeze(build(key));
      if (cache.size < MAX_CACHED) cache.set(key, attributes);
    }
    return attributes;
  };
}

/**
 * Creates the operator instruments on `meter`; gauges read `sources()` when collected.
 * `serviceNames` get zero-valued `breakwater.retries.refused` series up front.
 */
export function createOperatorRecorders(
  meter: Meter,
  serviceNames: string[],
  sources: () => ObservedSources | null,
): OperatorRecorders {
  const degraded = Object.freeze({});
  meter.createObservableGauge("breakwater.kv.degraded", {
    unit: "{state}",
    description: "1 while this instance runs on local breakers because KV is slow or down, else 0",
  }).addCallback((result) => {
    const kvDegraded = sources()?.kvDegraded;
    if (kvDegraded !== undefined) result.observe(kvDegraded() ? 1 : 0, degraded);
  });

  const upstreamAttributes = cached((key) => {
    const [service, upstream] = key.split("\n");
    return { [ATTR.service]: service, [ATTR.upstream]: upstream };
  });
  meter.createObservableGauge("breakwater.upstream.available", {
    unit: "{state}",
    description: "1 while the balancer may pick the upstream, 0 while it is ejected or unhealthy",
  }).addCallback((result) => {
    for (const { service, upstream, available } of sources()?.upstreams?.() ?? []) {
      result.observe(available ? 1 : 0, upstreamAttributes(`${service}\n${upstream}`));
    }
  });

  const ejections = meter.createCounter("breakwater.upstream.ejections", {
    unit: "{ejection}",
    description: "Upstreams taken out of rotation (outlier detection, failed health checks)",
  });
  const ejectionAttributes = cached((key) => {
    const [service, upstream, reason] = key.split("\n");
    return { [ATTR.service]: service, [ATTR.upstream]: upstream, [ATTR.reason]: reason };
  });

  const refused = meter.createCounter("breakwater.retries.refused", {
    unit: "{retry}",
    description: "Retries not sent: the retry budget was spent, or the deadline too close",
  });
  const refusedAttributes = cached((key) => {
    const [service, reason] = key.split("\n");
    return { [ATTR.service]: service, [ATTR.reason]: reason };
  });
  for (const service of serviceNames) refused.add(0, refusedAttributes(`${service}\nbudget`));

  const fallbacks = meter.createCounter("breakwater.fallback.responses", {
    unit: "{response}",
    description: "Requests answered by the service's fallback while its breaker was open",
  });
  const fallbackAttributes = cached((key) => {
    const [service, kind] = key.split("\n");
    return { [ATTR.service]: service, kind };
  });

  return {
    upstreamAvailability(service, upstream, available, reason) {
      if (!available) ejections.add(1, ejectionAttributes(`${service}\n${upstream}\n${reason}`));
    },
    retryRefused(service, reason) {
      refused.add(1, refusedAttributes(`${service}\n${reason}`));
    },
    fallback(service, kind) {
      fallbacks.add(1, fallbackAttributes(`${service}\n${kind}`));
    },
  };
}
