import assert from "node:assert/strict";
import { GATEWAY_V8_FLAGS } from "../src/runtime_flags.ts";
import { gatewayArgs as benchGatewayArgs } from "../bench/lib/targets.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("runtime flags: this Deno's V8 accepts every one of them", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", ...GATEWAY_V8_FLAGS, "console.log('ok')"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.ok(output.success, stderr);
  assert.equal(new TextDecoder().decode(output.stdout).trim(), "ok");
  assert.doesNotMatch(stderr, /did not recognize|unrecognized|unknown/i);
});

Deno.test("runtime flags: the image, the demo task and the benchmarks start Deno with them", () => {
  const dockerfile = Deno.readTextFileSync(`${ROOT}Dockerfile`);
  const cmd = dockerfile.slice(dockerfile.lastIndexOf("\nCMD ["));
  const demo: string = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.demo;
  const bench = benchGatewayArgs("/tmp", "/tmp/c.json");
  for (const flag of GATEWAY_V8_FLAGS) {
    assert.ok(cmd.includes(`"${flag}"`), `Dockerfile CMD has ${flag}`);
    assert.ok(demo.split(" ").includes(flag), `deno task demo has ${flag}`);
    // Before the main module: after it, Deno would hand the flag to the gateway as an argument.
    assert.ok(
      bench.indexOf(flag) > 0 &&
        bench.indexOf(flag) < bench.findIndex((a) => a.endsWith("main.ts")),
    );
    assert.ok(demo.indexOf(flag) < demo.indexOf("demo/demo.ts"));
  }
});

Deno.test("runtime flags: the README's command without the launcher passes them", () => {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const start = readme.indexOf("Without the launcher:");
  assert.ok(start > 0, "README has the command without the launcher");
  const block = readme.slice(readme.indexOf("```sh\n", start), readme.indexOf("\n```\n", start));
  for (const flag of GATEWAY_V8_FLAGS) {
    assert.ok(block.includes(flag), `README's deno run has ${flag}`);
    assert.ok(block.indexOf(flag) < block.indexOf("src/main.ts"));
  }
});
