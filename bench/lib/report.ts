/**
 * `bench/RESULTS.md`: the targets with their verdicts, then one section per scenario that ran.
 *
 * @module
 */
import { FAILURE_THRESHOLD, FLEET_MODES, FLEET_SCENARIOS, RECOVERY_MS } from "./fleet.ts";
import { run } from "./processes.ts";
import type { Results, ThroughputRow } from "./results.ts";
import { CONNECTIONS, decoder, DURATION_S, median, REPS } from "./settings.ts";

/** A number with `digits` decimals and thousands separators; `n/a` when not finite. */
export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** One line describing the machine: cores, CPU, memory, Deno and V8. */
export async function machine(): Promise<string> {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const nproc = decoder.decode((await run("nproc", [])).stdout).trim();
  const memory = Deno.readTextFileSync("/proc/meminfo").match(/MemTotal:\s+(\d+)/)?.[1];
  return `${nproc} cores (nproc), ${cpu}, ${
    fmt(Number(memory) / 1024 / 1024, 1)
  } GiB RAM, Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), ${Deno.build.os}/${Deno.build.arch}`;
}

/** Adds one row to the targets table. */
type AddTarget = (target: string, measured: string, ok: boolean | null) => void;

const rpsOf = (row?: ThroughputRow) => median(row?.runs.map((run) => run.rps) ?? []);
const p99Of = (row?: ThroughputRow) => median(row?.runs.map((run) => run.p99Ms) ?? []);

/** The throughput targets at one connection count. */
function throughputTargets(results: Results, connections: number, add: AddTarget): void {
  const rows = results.throughput.filter((row) => row.connections === connections);
  const pick = (test: (name: string) => boolean) => rows.find((row) => test(row.target));
  const gateway = pick((name) => name.includes("access log off"));
  const gatewayLog = pick((name) => name.includes("access log on"));
  const nginx = pick((name) => name === "nginx");
  const bare = pick((name) => name.startsWith("bare"));
  const node = pick((name) => name.startsWith("Fastify"));
  if (!gateway) return;
  const c = `c${connections}`;
  if (nginx) {
    const ratio = rpsOf(gateway) / rpsOf(nginx);
    add(
      `${c}: req/s >= 0.5x nginx`,
      `${fmt(ratio, 2)}x (log on: ${fmt(rpsOf(gatewayLog) / rpsOf(nginx), 2)}x)`,
      ratio >= 0.5,
    );
    const p99Ratio = p99Of(gateway) / p99Of(nginx);
    add(`${c}: p99 <= 2x nginx`, `${fmt(p99Ratio, 2)}x`, p99Ratio <= 2);
  }
  if (bare) {
    const ratio = rpsOf(gateway) / rpsOf(bare);
    add(
      `${c}: req/s >= 0.95x bare pooled Hono proxy`,
      `${fmt(ratio, 2)}x (log on: ${fmt(rpsOf(gatewayLog) / rpsOf(bare), 2)}x)`,
      ratio >= 0.95,
    );
  }
  if (node) {
    const ratio = rpsOf(gateway) / rpsOf(node);
    add(`${c}: ahead of the Node peer (Fastify)`, `${fmt(ratio, 2)}x`, ratio > 1);
  }
}

/** Admission, KV writes, fleet outage and propagation targets. */
function breakerTargets(results: Results, add: AddTarget): void {
  const admits = results.micro.filter((row) => row.name.startsWith("admit:"));
  if (admits.length > 0) {
    const worst = Math.max(...admits.map((row) => row.avgNs));
    add("admission < 1 us", `worst admit bench ${fmt(worst, 1)} ns`, worst < 1000);
  }
  const checks = results.kvWriteChecks;
  if (checks.length > 0) {
    const requests = checks.reduce((sum, check) => sum + check.requests, 0);
    const changed = checks.filter((check) => check.changed).length;
    const walBytes = checks.reduce((sum, check) => sum + Math.max(0, check.walBytes), 0);
    add(
      "zero KV writes per successful request",
      `${fmt(requests)} successful requests over ${checks.length} runs: KV file or WAL ` +
        `modified in ${changed} runs, WAL grew ${fmt(walBytes)} bytes`,
      changed === 0 ? true : walBytes / requests < 1,
    );
  }
  const shared = results.fleet.filter((row) => row.mode === "shared KV file");
  if (shared.length > 0) {
    const worst = Math.max(...shared.flatMap((row) => row.failedCalls));
    add(
      `fleet outage: failed calls <= ${FAILURE_THRESHOLD + 3} for every N`,
      shared.map((row) => `N=${row.instances}@${row.ratePerS}/s: ${fmt(median(row.failedCalls))}`)
        .join(", "),
      worst <= FAILURE_THRESHOLD + 3,
    );
  }
  const defaultSync = results.propagation.filter((row) => row.mode === "shared KV file");
  if (defaultSync.length > 0) {
    const worst = Math.max(...defaultSync.flatMap((row) => row.lagsMs));
    add("propagation < 1 s on a shared file", `max ${fmt(worst)} ms`, worst < 1000);
  }
}

/** The targets, each with the figure measured in this run. */
function targetsSection(results: Results): string[] {
  const lines = ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"];
  const verdict = (ok: boolean | null) => ok === null ? "n/a" : ok ? "met" : "**missed**";
  const add: AddTarget = (target, measured, ok) =>
    lines.push(`| ${target} | ${measured} | ${verdict(ok)} |`);
  for (const connections of CONNECTIONS) throughputTargets(results, connections, add);
  breakerTargets(results, add);
  const gatewayBodies = results.bodies.find((row) => row.target.includes("access log off"));
  if (gatewayBodies) {
    const worst = Math.max(gatewayBodies.downGrowthMiB, gatewayBodies.upGrowthMiB);
    add(
      "100 MiB through the gateway: RSS growth < 8 MiB",
      `down ${fmt(gatewayBodies.downGrowthMiB, 1)} MiB, up ${
        fmt(gatewayBodies.upGrowthMiB, 1)
      } MiB`,
      worst < 8,
    );
  }
  lines.push("");
  return lines;
}

/** The headline: failed calls and probes per fleet scenario and KV mode. */
function fleetSection(results: Results): string[] {
  const lines = ["## Fleet outage cost (the headline)", ""];
  lines.push(
    `The upstream turns dark (every call answers 503) while a load generator sends the given ` +
      `rate to each of N gateway processes (failureThreshold ${FAILURE_THRESHOLD}, recoveryTimeoutMs ${RECOVERY_MS}, ` +
      "halfOpenProbes 1). Counted on the upstream: failed calls it received until every " +
      "instance answered `breaker_open`, and probes it received in the first half-open round " +
      "(the upstream is still dark). Median (min-max) over the repetitions.",
    "",
  );
  lines.push(
    "| instances | req/s each | breakers | failed calls | target <= threshold+3 | probes at recovery | all instances rejecting after |",
  );
  lines.push("| ---: | ---: | --- | ---: | --- | ---: | ---: |");
  const range = (values: number[]) =>
    `${fmt(median(values))} (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})`;
  for (const { size, rate } of FLEET_SCENARIOS) {
    for (const mode of FLEET_MODES) {
      const row = results.fleet.find((each) =>
        each.instances === size && each.ratePerS === rate && each.mode === mode
      );
      if (!row) continue;
      const met = mode.startsWith("shared")
        ? (Math.max(...row.failedCalls) <= FAILURE_THRESHOLD + 3 ? "met" : "missed")
        : "(baseline)";
      lines.push(
        `| ${size} | ${rate} | ${mode} | ${range(row.failedCalls)} | ${met} | ${
          range(row.probes)
        } | ${fmt(median(row.allRejectMs))} ms |`,
      );
    }
  }
  lines.push("");
  lines.push(
    "All 10 processes run in both modes; for N < 10 only the first N receive traffic (each " +
      "scenario uses its own service, so its own fresh breaker).",
    "",
  );
  return lines;
}

/** Lags of an open breaker reaching the other instances. */
function propagationSection(results: Results): string[] {
  if (results.propagation.length === 0) return [];
  const lines = ["## Propagation over a shared KV file", ""];
  lines.push(
    "Load on instance 0 only; the 9 other instances are polled on `/admin/breakers` every " +
      "~20 ms. Lag = first `open` seen on a watcher minus instance 0's first `breaker_open` " +
      "answer. Target: < 1 s.",
    "",
  );
  lines.push("| KV | repetition | median lag | max lag |");
  lines.push("| --- | ---: | ---: | ---: |");
  for (const row of results.propagation) {
    lines.push(
      `| ${row.mode} | ${row.rep + 1} | ${fmt(median(row.lagsMs))} ms | ${
        fmt(Math.max(...row.lagsMs))
      } ms |`,
    );
  }
  lines.push("");
  return lines;
}

/** One table per connection count. */
function throughputSection(results: Results): string[] {
  if (results.throughput.length === 0) return [];
  const lines = ["## Proxy throughput and latency", ""];
  lines.push(
    `wrk -t2, ${DURATION_S} s per run, ~100-byte JSON from a Deno.serve upstream process on ` +
      "loopback; all processes share the 2 cores with wrk. CPU us/req = the proxy's own " +
      "user+system CPU time per request (for direct: the upstream's).",
    "",
  );
  for (const connections of CONNECTIONS) {
    const rows = results.throughput.filter((row) => row.connections === connections);
    const direct = rows.find((row) => row.target.startsWith("direct"));
    const nginx = rows.find((row) => row.target === "nginx");
    const bare = rows.find((row) => row.target.startsWith("bare"));
    lines.push(`### ${connections} connections`, "");
    lines.push(
      "| target | req/s | x direct | x nginx | x bare | p50 ms | p99 ms | p99 x nginx | CPU us/req | errors | foreign CPU |",
    );
    lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const row of rows) {
      const value = rpsOf(row);
      lines.push(
        `| ${row.target} | ${fmt(value)} | ${fmt(value / rpsOf(direct), 2)} | ${
          fmt(value / rpsOf(nginx), 2)
        } | ${fmt(value / rpsOf(bare), 2)} | ${
          fmt(median(row.runs.map((run) => run.p50Ms)), 2)
        } | ${fmt(p99Of(row), 2)} | ${fmt(p99Of(row) / p99Of(nginx), 2)} | ${
          fmt(median(row.runs.map((run) => run.cpuUsPerRequest)), 1)
        } | ${row.runs.reduce((sum, run) => sum + run.errors, 0)} | ${
          fmt(100 * median(row.runs.map((run) => run.foreignCpuShare)))
        }% |`,
      );
    }
    lines.push("");
  }
  return lines;
}

/** Speeds and peak RSS growth for 100 MiB each way. */
function bodiesSection(results: Results): string[] {
  if (results.bodies.length === 0) return [];
  const lines = ["## Large bodies (100 MiB)", ""];
  lines.push(
    "curl, median of the repetitions. RSS growth = peak RSS (VmHWM, reset via " +
      "/proc/PID/clear_refs before each direction) minus RSS before. Target: < 8 MiB.",
    "",
  );
  const direct = results.bodies.find((row) => row.target.startsWith("direct"));
  lines.push(
    "| target | download MB/s | x direct | upload MB/s | x direct | RSS before MiB | peak growth down MiB | peak growth up MiB |",
  );
  lines.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of results.bodies) {
    lines.push(
      `| ${row.target} | ${fmt(row.downMBs)} | ${fmt(row.downMBs / direct!.downMBs, 2)} | ${
        fmt(row.upMBs)
      } | ${fmt(row.upMBs / direct!.upMBs, 2)} | ${fmt(row.rssBeforeMiB, 1)} | ${
        fmt(row.downGrowthMiB, 1)
      } | ${fmt(row.upGrowthMiB, 1)} |`,
    );
  }
  lines.push("");
  return lines;
}

/** The CPU profile summary. */
function profileSection(results: Results): string[] {
  if (results.profile.length === 0) return [];
  const lines = ["## Where Breakwater's CPU goes (--cpu-prof under wrk -c32)", ""];
  lines.push(
    "Shares of the main thread's non-idle samples. Self = time in the frame itself (ops " +
      "such as `op_fetch` are the Rust side of a call); inclusive = time in the frame and " +
      "everything it called.",
    "",
  );
  lines.push("| kind | frame | share |", "| --- | --- | ---: |");
  for (const row of results.profile) {
    lines.push(`| ${row.kind} | \`${row.frame}\` | ${fmt(row.percent, 1)}% |`);
  }
  lines.push("");
  return lines;
}

/** The deno bench rows. */
function microSection(results: Results): string[] {
  if (results.micro.length === 0) return [];
  const lines = ["## Per-request costs (deno bench)", ""];
  lines.push("| file | bench | avg ns/op | p99 ns/op |");
  lines.push("| --- | --- | ---: | ---: |");
  for (const row of results.micro) {
    lines.push(`| ${row.file} | ${row.name} | ${fmt(row.avgNs, 1)} | ${fmt(row.p99Ns, 1)} |`);
  }
  lines.push("");
  return lines;
}

/**
 * The whole of `RESULTS.md` for one run.
 *
 * @example
 * ```ts
 * const markdown = report({ machine: await machine(), durationS: 417 }, results);
 * ```
 */
export function report(info: { machine: string; durationS: number }, results: Results): string {
  const lines: string[] = [];
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  lines.push("# Breakwater benchmark results", "");
  lines.push(`- Date: ${date} UTC`);
  lines.push(`- Machine: ${info.machine}`);
  lines.push(
    `- Command: \`deno task bench\` (bench/run.ts), whole run ${fmt(info.durationS)} s. ` +
      `Medians of ${REPS} repetitions; every ratio is against a baseline from this same run.`,
  );
  lines.push("");
  lines.push(...targetsSection(results));
  lines.push(...fleetSection(results));
  lines.push(...propagationSection(results));
  lines.push(...throughputSection(results));
  lines.push(...bodiesSection(results));
  lines.push(...profileSection(results));
  lines.push(...microSection(results));
  if (results.notes.length > 0) {
    lines.push("## Notes", "");
    for (const note of results.notes) lines.push(`- ${note}`);
    lines.push("");
  }
  return lines.join("\n");
}
