/**
 * 100 MiB down and up (curl) through the direct upstream, nginx, the bare proxy and Breakwater,
 * with the peak RSS growth of the proxies.
 *
 * @module
 */
import { BREAKWATER_ROWS, isDirect } from "../lib/lineup.ts";
import { run as runCommand } from "../lib/processes.ts";
import type { BodyRow } from "../lib/results.ts";
import { procStatusKiB, resetPeak } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { decoder, log, median, REPS } from "../lib/settings.ts";
import type { Target } from "../lib/targets.ts";

/** curl's transfer speed in MB/s (`-w` picks download or upload). */
async function curlSpeed(args: string[]): Promise<number> {
  const output = await runCommand("curl", ["-s", "-o", "/dev/null", "-H", "Expect:", ...args]);
  const [speed, status] = decoder.decode(output.stdout).trim().split(" ");
  if (status !== "200") throw new Error(`curl ${args.join(" ")}: status ${status}`);
  return Number(speed) / 1e6;
}

/** Speeds through one target; `noRss`: the pid is not the proxy's (direct, nginx's master). */
async function measureBodies(target: Target, dir: string, noRss: boolean): Promise<BodyRow> {
  const file = `${dir}/upload.bin`;
  const down: number[] = [];
  const up: number[] = [];
  const rssBefore = noRss ? NaN : procStatusKiB(target.pid, "VmRSS");
  let downGrowth = NaN;
  let upGrowth = NaN;
  if (!noRss) resetPeak(target.pid);
  for (let rep = 0; rep < REPS; rep++) {
    down.push(await curlSpeed(["-w", "%{speed_download} %{http_code}", `${target.url}/big`]));
  }
  if (!noRss) {
    downGrowth = (procStatusKiB(target.pid, "VmHWM") - rssBefore) / 1024;
    resetPeak(target.pid);
  }
  const rssBeforeUp = noRss ? NaN : procStatusKiB(target.pid, "VmRSS");
  for (let rep = 0; rep < REPS; rep++) {
    up.push(
      await curlSpeed(["-w", "%{speed_upload} %{http_code}", "-T", file, `${target.url}/upload`]),
    );
  }
  if (!noRss) upGrowth = (procStatusKiB(target.pid, "VmHWM") - rssBeforeUp) / 1024;
  return {
    target: target.name,
    downMBs: median(down),
    upMBs: median(up),
    rssBeforeMiB: rssBefore / 1024,
    downGrowthMiB: downGrowth,
    upGrowthMiB: upGrowth,
  };
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.curl) {
    results.notes.push("curl missing: large bodies skipped");
    return;
  }
  const upstream = await context.upstream();
  const targets = await context.lineup();
  log("large bodies");
  const file = await Deno.open(`${dir}/upload.bin`, { write: true, create: true });
  const chunk = new Uint8Array(1024 * 1024).fill(97);
  for (let index = 0; index < 100; index++) await file.write(chunk);
  file.close();
  const bodyTargets = targets.filter((target) =>
    isDirect(target, upstream) || target.name.startsWith("bare") ||
    target.name === BREAKWATER_ROWS.defaults || target.name === BREAKWATER_ROWS.fetch ||
    target.name === "nginx" || target.name === "HAProxy"
  );
  for (const target of bodyTargets) {
    const noRss = isDirect(target, upstream) || target.name === "nginx" ||
      target.name === "HAProxy";
    results.bodies.push(await measureBodies(target, dir, noRss));
    log(`bodies ${target.name}: ${JSON.stringify(results.bodies.at(-1))}`);
  }
}

/** The large-body scenario. */
export const bodies: Scenario = {
  name: "bodies",
  title: "100 MiB down and up (curl) and the proxies' peak RSS growth",
  needs: ["lineup"],
  run,
};
