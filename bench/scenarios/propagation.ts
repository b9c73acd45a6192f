/**
 * Propagation of an open breaker between processes sharing one KV file: load on instance 0
 * only, the other instances polled on their admin API every ~20 ms. Lag = when each watcher
 * first reports `open` minus when instance 0 first answered `breaker_open`.
 *
 * @module
 */
import {
  FLEET_BREAKER,
  FLEET_MODES,
  type FleetGateway,
  type FleetMode,
  type FleetUpstream,
  fleetUpstream,
  loadInstance,
  startFleet,
  stopFleet,
} from "../lib/fleet.ts";
import type { PropagationRow } from "../lib/results.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { log, REPS, sleep } from "../lib/settings.ts";

/** When each watcher (instances 1..) first reports `service` open, or Infinity. */
async function watchForOpen(
  gateways: FleetGateway[],
  service: string,
  deadline: number,
): Promise<number[]> {
  const seenOpen = new Array<number>(gateways.length).fill(Infinity);
  while (performance.now() < deadline && seenOpen.slice(1).some((at) => at === Infinity)) {
    await Promise.all(
      gateways.slice(1).map(async (gateway, index) => {
        if (seenOpen[index + 1] !== Infinity) return;
        try {
          const view = await (await fetch(`${gateway.adminUrl}/admin/breakers`)).json();
          const entry = view.services.find((each: { service: string }) => each.service === service);
          if (entry?.state === "open") seenOpen[index + 1] = performance.now();
        } catch { /* retry */ }
      }),
    );
    await sleep(20);
  }
  return seenOpen;
}

/** One repetition: trip `service` through instance 0 and time the others. */
async function propagate(
  gateways: FleetGateway[],
  upstream: FleetUpstream,
  service: string,
  rep: number,
  mode: FleetMode,
): Promise<PropagationRow> {
  const load = loadInstance(`${gateways[0].url}/${service}/x`, 200);
  await sleep(500);
  const darkAt = performance.now();
  upstream.state.dark = true;
  load.control.armedAt = darkAt;
  const seenOpen = await watchForOpen(gateways, service, darkAt + 8000);
  load.control.stop = true;
  await load.done;
  upstream.state.dark = false;
  const tripAt = load.control.firstOpenAt;
  const lags = seenOpen.slice(1).map((at) => at - tripAt);
  log(
    `propagation ${mode} rep ${rep + 1}: lags ${lags.map((lag) => lag.toFixed(0)).join(", ")} ms`,
  );
  return { mode, rep, lagsMs: lags };
}

async function run(context: BenchContext): Promise<void> {
  const upstream = fleetUpstream();
  const services: Record<string, unknown> = {};
  for (let rep = 0; rep < REPS; rep++) {
    services[`prop${rep}`] = {
      prefix: `/prop${rep}`,
      upstreams: [upstream.origin],
      breaker: FLEET_BREAKER,
    };
  }
  try {
    // Only where instances share a file: :memory: instances never see each other's trips.
    for (const mode of FLEET_MODES.filter((each) => each.startsWith("shared"))) {
      const gateways = await startFleet(context.dir, mode, services, "prop");
      try {
        for (let rep = 0; rep < REPS; rep++) {
          context.results.propagation.push(
            await propagate(gateways, upstream, `prop${rep}`, rep, mode),
          );
        }
      } finally {
        await stopFleet(gateways);
      }
    }
  } finally {
    await upstream.server.shutdown();
  }
}

/** The propagation scenario. */
export const propagation: Scenario = {
  name: "propagation",
  title: "propagation of an open breaker over a shared KV file (default sync, sync 50 ms)",
  needs: [],
  run,
};
