/**
 * Keeps idle targets off the core of the one being measured. Every proxy of the lineup stays
 * started for the whole scenario, and an idle gateway still wakes up (its breaker re-read, KV
 * sync, metrics sampler; a workers instance's main thread ~150-220 times a second): on the proxy
 * side's core those wake-ups preempt the proxy under test. Alternating runs of one pinned gateway
 * with its six idle neighbours stopped and running (2026-11-30): p99 4.2-9.9 ms stopped against
 * 11.5-15.9 ms running. So the other targets are stopped (SIGSTOP, their whole process trees) for
 * each run and continued (SIGCONT) after it; their sockets simply wait.
 *
 * @module
 */

/**
 * `pid` and every process below it (Linux `/proc/<pid>/task/<tid>/children`, read by `cat` in a
 * child: Deno reads another process's `/proc` entries only under `--allow-all`).
 */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let index = 0; index < out.length; index++) {
    const listed = new Deno.Command("sh", {
      args: ["-c", `cat /proc/${out[index]}/task/*/children 2>/dev/null`],
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    for (const child of new TextDecoder().decode(listed.stdout).trim().split(/\s+/)) {
      if (child !== "" && !out.includes(Number(child))) out.push(Number(child));
    }
  }
  return out;
}

function signal(pids: number[], name: Deno.Signal): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, name);
    } catch {
      // gone
    }
  }
}

/**
 * Stops the process trees of `pids` and returns the function that continues them (call it in a
 * `finally`: a stopped proxy would hold its port and memory until the run's end).
 */
export function freeze(pids: number[]): () => void {
  const all = pids.flatMap(processTree);
  signal(all, "SIGSTOP");
  return () => signal(all, "SIGCONT");
}
