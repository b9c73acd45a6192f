/**
 * What the run reads from /proc (proc(5)) and the file system around a measurement: CPU time of
 * processes and of the whole machine, resident memory and its peak, and the KV's SQLite files.
 *
 * @module
 */
import { run } from "./processes.ts";
import { decoder, sleep } from "./settings.ts";

/** CPU seconds (user+system) of a process and its children, from /proc. */
export async function cpuSeconds(pid: number): Promise<number> {
  const pids = [pid];
  const children = await run("pgrep", ["-P", String(pid)]);
  for (const line of decoder.decode(children.stdout).split("\n")) {
    if (line.trim()) pids.push(Number(line));
  }
  let ticks = 0;
  for (const each of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${each}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch { /* exited */ }
  }
  return ticks / 100;
}

/** Resident memory of a process and its children (nginx's and HAProxy's workers), KiB. */
export async function rssKiB(pid: number): Promise<number> {
  const children = await run("pgrep", ["-P", String(pid)]);
  let total = 0;
  for (const each of [String(pid), ...decoder.decode(children.stdout).split("\n")]) {
    if (!each.trim()) continue;
    try {
      total += procStatusKiB(Number(each), "VmRSS");
    } catch { /* exited */ }
  }
  return total;
}

/** A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB; NaN when absent. */
export function procStatusKiB(pid: number, field: string): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return match ? Number(match[1]) : NaN;
}

/** Resets the peak RSS (`VmHWM`) of a process to its current RSS. */
export function resetPeak(pid: number): void {
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** Busy and total CPU ticks of the whole machine, from /proc/stat. */
export function machineTicks(): { busy: number; total: number } {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0);
  return { busy: total - fields[3] - fields[4], total };
}

/**
 * Waits (up to `maxWaitMs`) until the machine is at least 85% idle over 300 ms: other work
 * (a test suite, say) would otherwise be measured as the proxy's slowness. Returns the wait.
 */
export async function waitQuiet(maxWaitMs = 8000): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < maxWaitMs) {
    const before = machineTicks();
    await sleep(300);
    const after = machineTicks();
    const busy = (after.busy - before.busy) / Math.max(1, after.total - before.total);
    if (busy <= 0.15) break;
  }
  return Date.now() - start;
}

/** Size of a KV's `-wal` file and the modification times of it and of the database. */
export function kvFiles(path: string): { walBytes: number; walMtime: number; dbMtime: number } {
  const stat = (file: string) => {
    try {
      const info = Deno.statSync(file);
      return { size: info.size, mtime: info.mtime?.getTime() ?? 0 };
    } catch {
      return { size: 0, mtime: 0 };
    }
  };
  const wal = stat(`${path}-wal`);
  return { walBytes: wal.size, walMtime: wal.mtime, dbMtime: stat(path).mtime };
}
