/**
 * The processes a bench run starts: spawned with their output in a log file, tracked so that
 * every one of them is stopped in a `finally` (and on SIGINT/SIGTERM), plus one-shot commands
 * and the external tools the run needs.
 *
 * @module
 */
import { pinned } from "./cpus.ts";
import { log, ROOT } from "./settings.ts";

/** A running child process. */
export interface Proc {
  /** What it is, for logs. */
  name: string;
  /** Its pid (the `sh` that exec'd it, so the same process). */
  pid: number;
  /** The child. */
  child: Deno.ChildProcess;
  /** SIGTERM, SIGKILL after 5 s, then waits for the exit. Idempotent. */
  stop(): Promise<void>;
}

/** Every process started and not stopped yet. */
export const running = new Set<Proc>();

/**
 * Spawns `args` with stdout+stderr sent to `logPath` (a file, or /dev/null), on the cores
 * `cpus` lists when given (bench/lib/cpus.ts).
 *
 * @example
 * ```ts
 * const upstream = spawn("upstream", [Deno.execPath(), "run", "-A", "bench/upstream.ts", "8080"], {
 *   logPath: "/dev/null",
 * });
 * await upstream.stop();
 * ```
 */
export function spawn(
  name: string,
  args: string[],
  options: { logPath: string; env?: Record<string, string>; cwd?: string; cpus?: string | null },
): Proc {
  // taskset execs the program, so the pid stays the one charged; threads and children inherit.
  const command = pinned(options.cpus ?? null, args);
  const child = new Deno.Command("sh", {
    args: ["-c", `exec "$@" > '${options.logPath}' 2>&1`, "sh", ...command],
    env: options.env,
    cwd: options.cwd ?? ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const proc: Proc = {
    name,
    pid: child.pid,
    child,
    stop: async () => {
      if (!running.has(proc)) return;
      running.delete(proc);
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(timer);
    },
  };
  running.add(proc);
  return proc;
}

/** Stops the running process with `pid`, if this run started it (and it is still running). */
export async function stopPid(pid: number): Promise<void> {
  await [...running].find((proc) => proc.pid === pid)?.stop();
}

/** Stops every process still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((proc) => proc.stop()));
}

/** Runs a command to completion with its output captured. */
export async function run(cmd: string, args: string[], cwd = ROOT): Promise<Deno.CommandOutput> {
  return await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
}

/** True when `binary` is on the PATH. */
export async function has(binary: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${binary}`])).success;
}

/** The external tools found (after installing what could be installed). */
export interface Tools {
  /** wrk: throughput and latency. */
  wrk: boolean;
  /** nginx: the throughput baseline. */
  nginx: boolean;
  /** HAProxy: the other C peer. */
  haproxy: boolean;
  /** curl: the 100 MiB bodies. */
  curl: boolean;
  /** node and npm: the Fastify peer. */
  node: boolean;
  /** What is missing and skipped. */
  notes: string[];
}

/**
 * Finds wrk, nginx, HAProxy and curl, installing the missing ones with apt-get when running as root;
 * otherwise notes the `apt-get install` line (those parts are skipped).
 */
export async function ensureTools(): Promise<Tools> {
  const notes: string[] = [];
  const missing = [];
  if (!(await has("wrk"))) missing.push("wrk");
  if (!(await has("nginx"))) missing.push("nginx");
  if (!(await has("haproxy"))) missing.push("haproxy");
  if (!(await has("curl"))) missing.push("curl");
  if (missing.length > 0) {
    if (Deno.uid() === 0) {
      log(`installing ${missing.join(" ")} with apt-get`);
      await run("apt-get", ["install", "-y", ...missing]);
    } else {
      const note = `missing ${missing.join(", ")}: run \`sudo apt-get install -y ${
        missing.join(" ")
      }\`; those parts are skipped`;
      console.error(note);
      notes.push(note);
    }
  }
  return {
    wrk: await has("wrk"),
    nginx: await has("nginx"),
    haproxy: await has("haproxy"),
    curl: await has("curl"),
    node: await has("node") && await has("npm"),
    notes,
  };
}
