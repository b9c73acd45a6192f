/**
 * The fleet bench's parts: the KV modes compared, the scenarios, an upstream in the runner
 * that counts what it receives with exact timestamps, a paced load generator, and a fleet of
 * gateway processes.
 *
 * @module
 */
import { waitHttp } from "./ports.ts";
import { running } from "./processes.ts";
import { log, sleep } from "./settings.ts";
import { startGateway, type Target } from "./targets.ts";

/** How the instances of a fleet share (or do not share) KV. */
export const FLEET_MODES = [
  "shared KV file",
  "per-instance :memory:",
  "shared KV file, syncIntervalMs 50",
] as const;

/** One of {@link FLEET_MODES}. */
export type FleetMode = typeof FLEET_MODES[number];

/** Gateway processes started per mode (scenarios load the first N). */
export const FLEET_SIZE = 10;
/** The breaker's `recoveryTimeoutMs` in the fleet bench. */
export const RECOVERY_MS = 2000;
/** The breaker's `failureThreshold` in the fleet bench. */
export const FAILURE_THRESHOLD = 5;
/** Instances under load and the request rate each receives. */
export const FLEET_SCENARIOS: readonly { size: number; rate: number }[] = [
  { size: 1, rate: 50 },
  { size: 3, rate: 50 },
  { size: 10, rate: 50 },
  { size: 10, rate: 10 },
];

/** The breaker every fleet service uses. */
export const FLEET_BREAKER = {
  failureThreshold: FAILURE_THRESHOLD,
  windowMs: 10_000,
  recoveryTimeoutMs: RECOVERY_MS,
  halfOpenProbes: 1,
};

/** The in-runner upstream: healthy, or dark (503 to everything). */
export interface FleetUpstream {
  /** Flip `dark`; `received` logs every request's time, path and whether it was dark. */
  state: { dark: boolean; received: { atMs: number; path: string; dark: boolean }[] };
  /** The server (shut down by the scenario). */
  server: Deno.HttpServer<Deno.NetAddr>;
  /** `http://127.0.0.1:PORT`. */
  origin: string;
}

/** Starts the in-runner upstream for the fleet. */
export function fleetUpstream(): FleetUpstream {
  const state: FleetUpstream["state"] = { dark: false, received: [] };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    state.received.push({ atMs: performance.now(), path, dark: state.dark });
    if (state.dark) return new Response("dark", { status: 503 });
    return Response.json({ ok: true });
  });
  return { state, server, origin: `http://127.0.0.1:${server.addr.port}` };
}

/** A running load generator and its controls. */
export interface InstanceLoad {
  /** Set `stop`; set `armedAt` to start looking for `breaker_open`; read `firstOpenAt`. */
  control: { stop: boolean; armedAt: number; firstOpenAt: number; inFlight: number };
  /** Resolves once stopped and every request settled. */
  done: Promise<void>;
}

/**
 * Sends ~`ratePerS` requests/s to one instance with at most 4 in flight; records the first
 * breaker_open answer after `armedAt`.
 */
export function loadInstance(url: string, ratePerS: number): InstanceLoad {
  const control = { stop: false, armedAt: Infinity, firstOpenAt: Infinity, inFlight: 0 };
  const done = (async () => {
    const intervalMs = 1000 / ratePerS;
    let next = performance.now();
    while (!control.stop) {
      next += intervalMs;
      if (control.inFlight < 4) {
        control.inFlight++;
        const sentAt = performance.now();
        fetch(url).then(async (response) => {
          await response.body?.cancel();
          if (
            response.headers.get("x-breakwater-error") === "breaker_open" &&
            sentAt >= control.armedAt && control.firstOpenAt === Infinity
          ) control.firstOpenAt = performance.now();
        }).catch(() => {}).finally(() => control.inFlight--);
      }
      await sleep(Math.max(0, next - performance.now()));
    }
    while (control.inFlight > 0) await sleep(5);
  })();
  return { control, done };
}

/** A gateway of a fleet. */
export type FleetGateway = Target & { adminUrl: string };

/**
 * Starts {@link FLEET_SIZE} gateways in `mode` with `services` and waits until all answer.
 * `label` names their config, KV and log files, so fleets of different scenarios never share
 * a KV file.
 */
export async function startFleet(
  dir: string,
  mode: FleetMode,
  services: Record<string, unknown>,
  label = "fleet",
): Promise<FleetGateway[]> {
  log(`${label}: starting ${FLEET_SIZE} gateways (${mode})`);
  const modeIndex = FLEET_MODES.indexOf(mode);
  const gateways = [];
  for (let index = 0; index < FLEET_SIZE; index++) {
    gateways.push(
      await startGateway({
        name: `${label}-${modeIndex}-${index}`,
        dir,
        services,
        kvPath: mode.startsWith("shared") ? `${dir}/${label}-${modeIndex}.kv` : ":memory:",
        kvSyncMs: mode.endsWith("50") ? 50 : undefined,
        logLevel: "warn",
        logPath: `${dir}/${label}-${index}.log`,
      }),
    );
  }
  await Promise.all(gateways.map((gateway) => waitHttp(`${gateway.url}/healthz`, 60_000)));
  return gateways;
}

/** Stops the gateways of a fleet (nothing else the run started). */
export async function stopFleet(gateways: FleetGateway[]): Promise<void> {
  const pids = new Set(gateways.map((gateway) => gateway.pid));
  await Promise.all([...running].filter((proc) => pids.has(proc.pid)).map((proc) => proc.stop()));
}
