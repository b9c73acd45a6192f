/**
 * What the scenarios measure, row by row: filled in by `bench/scenarios/*`, written as raw JSON
 * and rendered by `report.ts`.
 *
 * @module
 */
import type { Transfer } from "../scenarios/memory.ts";
import type { FleetMode } from "./fleet.ts";
import type { WrkResult } from "./wrk.ts";

/** Every wrk run of one target at one connection count. */
export interface ThroughputRow {
  /** The target's name. */
  target: string;
  /** wrk connections. */
  connections: number;
  /** One result per repetition. */
  runs: WrkResult[];
}

/** 100 MiB down and up through one target. */
export interface BodyRow {
  /** The target's name. */
  target: string;
  /** Download speed, median of the repetitions. */
  downMBs: number;
  /** Upload speed, median of the repetitions. */
  upMBs: number;
  /** RSS before the downloads (NaN where the pid is not the proxy's). */
  rssBeforeMiB: number;
  /** Peak RSS growth during the downloads. */
  downGrowthMiB: number;
  /** Peak RSS growth during the uploads. */
  upGrowthMiB: number;
}

/** One frame of the CPU profile summary. */
export interface ProfileRow {
  /** `self`: time in the frame; `inclusive`: in it and everything it called. */
  kind: "self" | "inclusive";
  /** Function and location. */
  frame: string;
  /** Share of the non-idle samples. */
  percent: number;
}

/** One `deno bench` result. */
export interface MicroRow {
  /** The bench file. */
  file: string;
  /** The bench name. */
  name: string;
  /** Average per iteration. */
  avgNs: number;
  /** 99th percentile per iteration. */
  p99Ns: number;
}

/** One fleet scenario (N instances at a rate) in one KV mode, over the repetitions. */
export interface FleetRow {
  /** How the instances share KV. */
  mode: FleetMode;
  /** Instances under load. */
  instances: number;
  /** Requests per second the load generator sends to each loaded instance. */
  ratePerS: number;
  /** Failed calls the upstream received until every instance rejected, per repetition. */
  failedCalls: number[];
  /** Probes the upstream received in the first half-open round, per repetition. */
  probes: number[];
  /** From the upstream going dark until every instance rejected, per repetition. */
  allRejectMs: number[];
}

/** How long the other instances took to see one instance's trip. */
export interface PropagationRow {
  /** How the instances share KV. */
  mode: FleetMode;
  /** The repetition (0-based). */
  rep: number;
  /** Per watching instance. */
  lagsMs: number[];
}

/** A look at the KV's SQLite files around one successful-traffic wrk run. */
export interface KvWriteCheck {
  /** Requests in the run. */
  requests: number;
  /** Growth of the `-wal` file in bytes (SQLite appends every commit to it). */
  walBytes: number;
  /**
   * Growth of the same file over as long with no traffic (the instance's heartbeat and other
   * timed writes), measured once before the runs; NaN when not measured.
   */
  idleWalBytes?: number;
  /** True when the database or its WAL was modified during the run. */
  changed: boolean;
  /**
   * KV commits during the run, counted in the WAL (`bench/lib/kv_wal.ts`); null when the log
   * restarted during the run (a checkpoint), which loses the count.
   */
  commits?: number | null;
  /** Commits in as long with no traffic, measured once before the runs (null: not told). */
  idleCommits?: number | null;
  /**
   * Commits in as long under light traffic (a request every 50 ms: busy every second, few
   * requests), measured once before the runs; what timed writes cost while busy.
   */
  lightCommits?: number | null;
  /** Requests of that light run. */
  lightRequests?: number;
}

/** One large transfer through one proxy process, with its resident memory around it. */
export interface MemoryRow {
  /** The proxy: `Breakwater (http1 client)`, `Breakwater (fetch client)`, `nginx`. */
  target: string;
  /**
   * `download`: the upstream streams to curl; `upload`: curl sends a chunked body to an
   * upstream reading at full speed; `upload, slow upstream`: to one pausing after every MiB;
   * `download 1 MiB (control)`: the cost of a first request whatever its size.
   */
  transfer: Transfer;
  /** `cold`: the first transfer after the process started; `warm`: the one after it. */
  phase: "cold" | "warm";
  /** Bytes moved, in MiB. */
  mib: number;
  /** VmRSS just before the transfer. */
  rssBeforeMiB: number;
  /** VmHWM after the transfer (reset to the current RSS just before it). */
  peakMiB: number;
  /** The largest VmRSS seen when sampling every 10 ms, as a check on `peakMiB`. */
  sampledPeakMiB: number;
  /** `peakMiB - rssBeforeMiB`. */
  growthMiB: number;
  /** Bytes moved over curl's total time, in MiB/s. */
  mibPerS: number;
}

/** Every wrk run of the gateway with one tracing set-up. */
export interface TracingRow {
  /** `off`, `on, 100% sampled`, `on, sampled out`. */
  variant: string;
  /** One result per repetition; `cpuUsPerRequest` includes the export tail after wrk. */
  runs: WrkResult[];
  /** Per repetition: gateway CPU per request after wrk stopped, until exports went quiet. */
  tailUsPerRequest: number[];
  /** OTLP trace exports the sink received during this variant's runs. */
  exports: number;
  /** Bytes of those exports. */
  exportBytes: number;
}

/** Everything one run measured. Scenarios that did not run leave their lists empty. */
export interface Results {
  /** Throughput and latency rows. */
  throughput: ThroughputRow[];
  /** 1 MiB responses under wrk: one row per target (`connections` is wrk's). */
  mibBodies: ThroughputRow[];
  /** Large-body rows. */
  bodies: BodyRow[];
  /** CPU profile summary. */
  profile: ProfileRow[];
  /** deno bench rows. */
  micro: MicroRow[];
  /** Fleet outage rows. */
  fleet: FleetRow[];
  /** Propagation rows. */
  propagation: PropagationRow[];
  /** Streaming memory rows, per upstream client. */
  memory: MemoryRow[];
  /** Tracing cost rows. */
  tracing: TracingRow[];
  /** KV file checks around Breakwater's throughput runs. */
  kvWriteChecks: KvWriteCheck[];
  /** What was skipped or failed, for the report. */
  notes: string[];
}

/** Empty results with `notes` to start from. */
export function emptyResults(notes: string[] = []): Results {
  return {
    throughput: [],
    mibBodies: [],
    bodies: [],
    profile: [],
    micro: [],
    fleet: [],
    propagation: [],
    memory: [],
    tracing: [],
    kvWriteChecks: [],
    notes,
  };
}
