/**
 * Coexistence with Deno's built-in OpenTelemetry (`OTEL_DENO=true`).
 *
 * With it on, `fetch` starts a span of its own for every request and *appends* its
 * `traceparent` to the request's headers: a request that already carries the gateway's client
 * span context leaves with two `traceparent` values, and the upstream sees either an invalid
 * header or the wrong parent (W3C Trace Context allows exactly one). Deno's propagator skips
 * injection when the active context carries OpenTelemetry's "suppress tracing" key, so the
 * gateway runs `fetch` under that key: the upstream then receives the gateway's header only.
 * Deno still records its own `fetch` span (it ignores the key for span creation); the gateway's
 * HTTP/1.1 client over `Deno.connect` is not instrumented by Deno at all, and the OTLP
 * exporters use it for that reason.
 *
 * @module
 */
import { suppressTracing } from "@opentelemetry/core";
import type { Context } from "@opentelemetry/api";

/** The shape of `Deno.telemetry.contextManager` this module uses. */
interface RuntimeContextManager {
  active(): Context;
  with<T>(context: Context, fn: () => T): T;
}

/** The global registration slot of `@opentelemetry/api` 1.x, which Deno fills when tracing. */
const API_GLOBAL = Symbol.for("opentelemetry.js.api.1");

let resolved: RuntimeContextManager | null | undefined;

/** Deno's context manager when Deno's own tracing is on, else null (decided at boot: once). */
function runtimeContextManager(): RuntimeContextManager | null {
  if (resolved === undefined) resolved = findRuntimeContextManager();
  return resolved;
}

function findRuntimeContextManager(): RuntimeContextManager | null {
  const telemetry = (Deno as unknown as { telemetry?: { contextManager?: unknown } }).telemetry;
  const manager = telemetry?.contextManager;
  if (manager === undefined) return null;
  // Deno registers its context manager globally only when OTEL_DENO turned tracing on.
  const registered = (globalThis as Record<symbol, { context?: unknown } | undefined>)[API_GLOBAL];
  return registered?.context === manager ? manager as RuntimeContextManager : null;
}

/** True when Deno's built-in tracing instruments `fetch` and `Deno.serve` in this process. */
export function runtimeTracingEnabled(): boolean {
  return runtimeContextManager() !== null;
}

/**
 * Runs `fn` so that Deno's built-in tracing injects no trace headers into the `fetch` calls it
 * starts (including those that continue asynchronously from it). Without `OTEL_DENO` it just
 * calls `fn`.
 *
 * @example
 * ```ts
 * headers.set("traceparent", clientSpan.traceparent); // the gateway's, exactly once
 * const response = await withoutRuntimeTracing(() => fetch(url, { headers }));
 * ```
 */
export function withoutRuntimeTracing<T>(fn: () => T): T {
  const manager = runtimeContextManager();
  if (manager === null) return fn();
  return manager.with(suppressTracing(manager.active()), fn);
}
