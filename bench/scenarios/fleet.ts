/**
 * The fleet outage cost (the headline): 10 gateway processes per KV mode in front of the
 * in-runner upstream, which turns dark while the first N instances receive a steady rate.
 * Counted on the upstream: failed calls until every loaded instance answers `breaker_open`, and
 * the probes of the first half-open round (it stays dark, so each probe fails).
 *
 * @module
 */
import {
  FLEET_BREAKER,
  FLEET_MODES,
  FLEET_SCENARIOS,
  type FleetGateway,
  type FleetMode,
  type FleetUpstream,
  fleetUpstream,
  loadInstance,
  RECOVERY_MS,
  startFleet,
  stopFleet,
} from "../lib/fleet.ts";
import type { FleetRow } from "../lib/results.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { log, REPS, sleep } from "../lib/settings.ts";

/** One service (its own breaker) per scenario and repetition, so each starts fresh. */
function outageServices(upstream: FleetUpstream): Record<string, unknown> {
  const services: Record<string, unknown> = {};
  for (const { size, rate } of FLEET_SCENARIOS) {
    for (let rep = 0; rep < REPS; rep++) {
      services[`n${size}q${rate}r${rep}`] = {
        prefix: `/n${size}q${rate}r${rep}`,
        upstreams: [upstream.origin],
        breaker: FLEET_BREAKER,
      };
    }
  }
  return services;
}

/** One outage: load, darkness, every instance rejecting, the first half-open round. */
async function measureOutage(
  gateways: FleetGateway[],
  upstream: FleetUpstream,
  service: string,
  size: number,
  rate: number,
): Promise<{ failed: number; probes: number; allRejectMs: number }> {
  const loads = gateways.slice(0, size).map((gateway) =>
    loadInstance(`${gateway.url}/${service}/x`, rate)
  );
  await sleep(1500);
  const darkAt = performance.now();
  upstream.state.dark = true;
  for (const load of loads) load.control.armedAt = darkAt;
  const deadline = darkAt + 10_000;
  while (
    performance.now() < deadline && loads.some((load) => load.control.firstOpenAt === Infinity)
  ) await sleep(5);
  const allOpenAt = Math.max(...loads.map((load) => load.control.firstOpenAt));
  const firstOpenAt = Math.min(...loads.map((load) => load.control.firstOpenAt));
  await sleep(Math.max(0, firstOpenAt + RECOVERY_MS + 1200 - performance.now()));
  for (const load of loads) load.control.stop = true;
  await Promise.all(loads.map((load) => load.done));
  upstream.state.dark = false;
  const mine = upstream.state.received.filter((entry) =>
    entry.path.startsWith(`/${service}/`) && entry.dark && entry.atMs >= darkAt
  );
  return {
    failed: mine.filter((entry) => entry.atMs <= allOpenAt).length,
    probes: mine.filter((entry) => entry.atMs > allOpenAt).length,
    allRejectMs: allOpenAt - darkAt,
  };
}

/** Every scenario, every repetition, on one fleet. */
async function measureMode(
  gateways: FleetGateway[],
  upstream: FleetUpstream,
  mode: FleetMode,
  rows: FleetRow[],
): Promise<void> {
  for (const { size, rate } of FLEET_SCENARIOS) {
    const row: FleetRow = {
      mode,
      instances: size,
      ratePerS: rate,
      failedCalls: [],
      probes: [],
      allRejectMs: [],
    };
    rows.push(row);
    for (let rep = 0; rep < REPS; rep++) {
      const outage = await measureOutage(gateways, upstream, `n${size}q${rate}r${rep}`, size, rate);
      row.failedCalls.push(outage.failed);
      row.probes.push(outage.probes);
      row.allRejectMs.push(outage.allRejectMs);
      log(
        `fleet ${mode} N=${size} @${rate}/s rep ${
          rep + 1
        }: failed ${outage.failed}, probes ${outage.probes}, all rejecting after ${
          outage.allRejectMs.toFixed(0)
        } ms`,
      );
    }
  }
}

async function run(context: BenchContext): Promise<void> {
  const upstream = fleetUpstream();
  try {
    for (const mode of FLEET_MODES) {
      const gateways = await startFleet(context.dir, mode, outageServices(upstream));
      try {
        await measureMode(gateways, upstream, mode, context.results.fleet);
      } finally {
        await stopFleet(gateways);
      }
    }
  } finally {
    await upstream.server.shutdown();
  }
}

/** The fleet outage scenario. */
export const fleet: Scenario = {
  name: "fleet",
  title: "fleet outage cost: N = 1, 3, 10 gateways; shared KV file, :memory: each, sync 50 ms",
  needs: [],
  run,
};
