import assert from "node:assert/strict";
import { freeze, processTree } from "../../bench/lib/freeze.ts";

/** The state letter of `/proc/<pid>/stat` ("S" sleeping, "T" stopped), read through a child. */
async function stateOf(pid: number): Promise<string> {
  const output = await new Deno.Command("sh", {
    args: ["-c", `cut -d')' -f2 /proc/${pid}/stat`],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(output.stdout).trim().split(" ")[0];
}

Deno.test("freeze stops a process and its children until resumed", async () => {
  // sh with a sleeping child: the tree is two processes.
  const parent = new Deno.Command("sh", {
    args: ["-c", "sleep 30 & wait"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let tree: number[] = [];
    for (let i = 0; i < 200 && tree.length < 2; i++) {
      tree = processTree(parent.pid);
      if (tree.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(tree.length, 2, `sh and its sleep: ${tree}`);
    const resume = freeze([parent.pid]);
    for (const pid of tree) assert.equal(await stateOf(pid), "T");
    resume();
    for (const pid of tree) assert.notEqual(await stateOf(pid), "T");
  } finally {
    for (const pid of processTree(parent.pid).reverse()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await parent.status;
  }
});
