/**
 * One wrk run (github.com/wg/wrk): req/s, latency percentiles and errors from its output, the
 * proxy's CPU per request, and the share of the machine that processes outside the test used.
 *
 * @module
 */
import { loadCpus, pinned } from "./cpus.ts";
import { run } from "./processes.ts";
import { cpuSeconds, machineTicks, rssKiB } from "./sampling.ts";
import { decoder, RESULTS_DIR } from "./settings.ts";

/** What one wrk run measured. */
export interface WrkResult {
  /** Requests per second. */
  rps: number;
  /** Median latency. */
  p50Ms: number;
  /** 99th percentile latency. */
  p99Ms: number;
  /** Requests completed. */
  requests: number;
  /** Non-2xx/3xx answers plus socket errors. */
  errors: number;
  /** The proxy's user+system CPU per request (NaN without a proxy pid). */
  cpuUsPerRequest: number;
  /** Share of the machine's CPU used during the run by processes outside the test. */
  foreignCpuShare: number;
  /** The proxy's resident memory (with its children) right after the run, MiB (NaN without). */
  rssMiB: number;
}

/** wrk's `12.5us` / `3.2ms` / `1.1s` / `2m` as milliseconds; NaN when unreadable. */
export function toMs(text: string): number {
  const match = text.match(/^([\d.]+)(us|ms|s|m)$/);
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us"
    ? value / 1000
    : match[2] === "ms"
    ? value
    : match[2] === "s"
    ? value * 1000
    : value * 60_000;
}

/** CPU seconds of several processes (and their children) together. */
async function cpuOf(pids: number[]): Promise<number> {
  let seconds = 0;
  for (const pid of pids) seconds += await cpuSeconds(pid);
  return seconds;
}

/** Runs `wrk -t2` against `url`; `proxyPid` is charged the CPU, `otherPids` are part of the test. */
export async function wrk(
  url: string,
  connections: number,
  durationS: number,
  proxyPid: number | null,
  otherPids: number[] = [],
): Promise<WrkResult> {
  const proxyPids = proxyPid === null ? [] : [proxyPid];
  const cpuBefore = await cpuOf(proxyPids);
  const otherBefore = await cpuOf(otherPids);
  const ticksBefore = machineTicks();
  // sh reports wrk's CPU (its waited children's cutime+cstime) once wrk has exited; wrk runs on
  // the load side's cores when the run is pinned (bench/lib/cpus.ts).
  const output = await run("sh", [
    "-c",
    '"$@"; echo; cat /proc/$$/stat',
    "sh",
    ...pinned(loadCpus(), [
      "wrk",
      "-t2",
      `-c${connections}`,
      `-d${durationS}s`,
      "--latency",
      url,
    ]),
  ]);
  const ticksAfter = machineTicks();
  const cpuAfter = await cpuOf(proxyPids);
  const otherAfter = await cpuOf(otherPids);
  const rssMiB = proxyPid === null ? NaN : await rssKiB(proxyPid) / 1024;
  const text = decoder.decode(output.stdout);
  const shStat = text.trim().split("\n").at(-1) ?? "";
  const shFields = shStat.slice(shStat.lastIndexOf(")") + 2).split(" ");
  const wrkSeconds = (Number(shFields[13]) + Number(shFields[14])) / 100;
  const machineSeconds = (ticksAfter.busy - ticksBefore.busy) / 100;
  const capacitySeconds = (ticksAfter.total - ticksBefore.total) / 100;
  const requests = Number(text.match(/(\d+) requests in/)?.[1] ?? NaN);
  const result = {
    rps: Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? NaN),
    // Anchored: "91.50%" in the thread-stats columns must not match.
    p50Ms: toMs(text.match(/^\s+50%\s+(\S+)/m)?.[1] ?? ""),
    p99Ms: toMs(text.match(/^\s+99%\s+(\S+)/m)?.[1] ?? ""),
    requests,
    errors: wrkErrors(text),
    cpuUsPerRequest: proxyPid === null ? NaN : (cpuAfter - cpuBefore) * 1e6 / requests,
    foreignCpuShare: Math.max(
      0,
      (machineSeconds - (cpuAfter - cpuBefore) - (otherAfter - otherBefore) - wrkSeconds) /
        capacitySeconds,
    ),
    rssMiB,
  };
  if (![result.p50Ms, result.p99Ms, result.rps].every(Number.isFinite)) {
    await Deno.writeTextFile(`${RESULTS_DIR}/wrk-unparsed.log`, `${url}\n${text}\n`, {
      append: true,
    });
  }
  return result;
}

/** Non-2xx/3xx responses plus every kind of socket error wrk reports. */
function wrkErrors(text: string): number {
  const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const socketErrors = text.match(
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
  );
  return non2xx +
    (socketErrors ? socketErrors.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0);
}
