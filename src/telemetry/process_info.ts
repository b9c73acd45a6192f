/**
 * Facts about the running process for dashboards and alerts: which build runs
 * (`breakwater.build.info`, the Prometheus `*_build_info` convention), when it started
 * (`process.start_time`, Prometheus' `process_start_time_seconds`) and for how long
 * (`process.uptime`, OpenTelemetry semantic conventions).
 *
 * @module
 */
import type { Meter } from "@opentelemetry/api";

/** Options of {@link registerProcessInfo}. */
export interface ProcessInfoOptions {
  /** The gateway's version (`deno.json` `version`); `unknown` when not given. */
  version?: string;
}

/** Unix time (seconds) at which this process started: Deno's time origin is the process start. */
export function processStartTimeS(): number {
  return performance.timeOrigin / 1000;
}

/**
 * Registers the build-info, start-time and uptime gauges on `meter`.
 *
 * @example
 * ```ts
 * registerProcessInfo(meter, { version: "0.1.0" });
 * // breakwater_build_info{version="0.1.0",deno_version="2.9.6"} 1
 * // process_start_time_seconds 1.7646e9
 * ```
 */
export function registerProcessInfo(meter: Meter, options: ProcessInfoOptions = {}): void {
  const build = Object.freeze({
    version: options.version ?? "unknown",
    "deno.version": Deno.version.deno,
    "v8.version": Deno.version.v8,
  });
  meter.createObservableGauge("breakwater.build.info", {
    description: "Always 1; its attributes name the running build (version, Deno, V8)",
  }).addCallback((result) => result.observe(1, build));

  const startTimeS = processStartTimeS();
  meter.createObservableGauge("process.start_time", {
    unit: "s",
    description: "Start time of the gateway process since the Unix epoch",
  }).addCallback((result) => result.observe(startTimeS));
  meter.createObservableGauge("process.uptime", {
    unit: "s",
    description: "Time since the gateway process started",
  }).addCallback((result) => result.observe(performance.now() / 1000));
}
