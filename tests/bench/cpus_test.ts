import assert from "node:assert/strict";
import { parseCpuList, pinned, splitCores } from "../../bench/lib/cpus.ts";

Deno.test("parseCpuList reads ranges and single cores as Linux writes them", () => {
  assert.deepEqual(parseCpuList("0-1"), [0, 1]);
  assert.deepEqual(parseCpuList("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList("5"), [5]);
  assert.throws(() => parseCpuList("a-b"), /not a CPU list: "a-b"/);
});

Deno.test("splitCores gives the load side the first half and the proxy the rest", () => {
  assert.equal(splitCores([0]), null);
  assert.equal(splitCores([]), null);
  assert.deepEqual(splitCores([0, 1]), { load: "0", proxy: "1" });
  assert.deepEqual(splitCores([0, 1, 2]), { load: "0", proxy: "1,2" });
  assert.deepEqual(splitCores([0, 1, 2, 3, 8, 9]), { load: "0,1,2", proxy: "3,8,9" });
});

Deno.test("pinned prefixes taskset only when given cores", () => {
  assert.deepEqual(pinned(null, ["wrk", "-t2"]), ["wrk", "-t2"]);
  assert.deepEqual(pinned("1", ["wrk", "-t2"]), ["taskset", "-c", "1", "wrk", "-t2"]);
});

Deno.test("a process started through pinned runs only on the cores asked for", async () => {
  // Deno wants --allow-all to read /proc/self/status; a child reads its own instead.
  const own = await new Deno.Command("sh", {
    args: ["-c", "grep Cpus_allowed_list /proc/self/status"],
    stdout: "piped",
  }).output();
  const cores = parseCpuList(new TextDecoder().decode(own.stdout).split(/\s+/)[1]);
  const first = String(cores[0]);
  const [command, ...args] = pinned(first, [
    "sh",
    "-c",
    "grep Cpus_allowed_list /proc/self/status",
  ]);
  const output = await new Deno.Command(command, { args, stdout: "piped" }).output();
  assert.ok(output.success);
  assert.equal(new TextDecoder().decode(output.stdout).trim().split(/\s+/).at(-1), first);
});
