/**
 * Resource utilisation: process CPU and memory (OpenTelemetry semantic names), the
 * container's cgroup limits, and event-loop delay, so an operator sees the gateway run out
 * of CPU before its latency shows it.
 *
 * @module
 */
import type { Histogram, Meter } from "@opentelemetry/api";
import process from "node:process";
import { type CgroupLimits, readCgroupLimits } from "../config/cgroup.ts";

// deno-fmt-ignore -- a table of numbers reads better on a few lines than one per line
/** Bucket boundaries (seconds) of `breakwater.event_loop.delay`: 1 ms to 5 s. */
export const EVENT_LOOP_DELAY_BUCKETS_S: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5
];

/** How often the event-loop delay is sampled by default. */
export const DEFAULT_EVENT_LOOP_SAMPLE_INTERVAL_MS = 100;

/** Options of {@link registerProcessMetrics}. */
export interface ProcessMetricsOptions {
  /** Where cgroup v2 is mounted (tests point it at a temporary directory). */
  cgroupRoot?: string;
  /** Sampling period of the event-loop delay timer. */
  eventLoopSampleIntervalMs?: number;
}

const USER = { "cpu.mode": "user" } as const;
const SYSTEM = { "cpu.mode": "system" } as const;

/**
 * Registers the resource instruments on `meter` and starts the event-loop delay sampler.
 * Returns the function that stops the sampler (call it on shutdown) and the limits found.
 */
export function registerProcessMetrics(
  meter: Meter,
  options: ProcessMetricsOptions = {},
): { stop: () => void; limits: CgroupLimits } {
  meter.createObservableCounter("process.cpu.time", {
    unit: "s",
    description: "CPU time used by the gateway process, by mode",
  }).addCallback((result) => {
    const usage = process.cpuUsage();
    result.observe(usage.user / 1e6, USER);
    result.observe(usage.system / 1e6, SYSTEM);
  });
  meter.createObservableUpDownCounter("process.memory.usage", {
    unit: "By",
    description: "Resident set size of the gateway process",
  }).addCallback((result) => result.observe(Deno.memoryUsage().rss));

  const limits = readCgroupLimits(options.cgroupRoot);
  const { cpuCores, memoryBytes } = limits;
  if (cpuCores !== null) {
    meter.createObservableGauge("breakwater.cgroup.cpu.limit", {
      unit: "{cpu}",
      description: "CPU quota of the container in cores (cgroup v2 cpu.max)",
    }).addCallback((result) => result.observe(cpuCores));
  }
  if (memoryBytes !== null) {
    meter.createObservableGauge("breakwater.cgroup.memory.limit", {
      unit: "By",
      description: "Memory limit of the container (cgroup v2 memory.max)",
    }).addCallback((result) => result.observe(memoryBytes));
  }

  const delay = meter.createHistogram("breakwater.event_loop.delay", {
    unit: "s",
    description: "How late a periodic timer fired: time the event loop was blocked",
    advice: { explicitBucketBoundaries: [...EVENT_LOOP_DELAY_BUCKETS_S] },
  });
  const stop = startEventLoopSampler(
    delay,
    options.eventLoopSampleIntervalMs ?? DEFAULT_EVENT_LOOP_SAMPLE_INTERVAL_MS,
  );
  return { stop, limits };
}

/**
 * Records, every `intervalMs`, how much later than scheduled the timer fired. The timer is
 * unref'd (it never keeps the process alive); the returned function stops it.
 */
export function startEventLoopSampler(histogram: Histogram, intervalMs: number): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const lateMs = now - last - intervalMs;
    last = now;
    histogram.record(lateMs > 0 ? lateMs / 1000 : 0);
  }, intervalMs);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
