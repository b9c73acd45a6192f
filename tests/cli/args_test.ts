/** The command-line parser and the config path resolution, as pure functions. */
import assert from "node:assert/strict";
import { configPathFor, parseArgs, UsageError } from "../../src/cli.ts";

Deno.test("parseArgs: run, check and the two --config forms", () => {
  assert.deepEqual(parseArgs([]), { kind: "run", check: false, configFlag: null });
  assert.deepEqual(parseArgs(["--config", "/etc/gw.json"]), {
    kind: "run",
    check: false,
    configFlag: "/etc/gw.json",
  });
  assert.deepEqual(parseArgs(["--check", "--config=./a b.json"]), {
    kind: "run",
    check: true,
    configFlag: "./a b.json",
  });
});

Deno.test("parseArgs: help and version win; a lone -- (deno task passes it on) is skipped", () => {
  assert.deepEqual(parseArgs(["--check", "--help"]), { kind: "help" });
  assert.deepEqual(parseArgs(["-h"]), { kind: "help" });
  assert.deepEqual(parseArgs(["--version", "--nonsense"]), { kind: "version" });
  assert.deepEqual(parseArgs(["--", "--check"]), { kind: "run", check: true, configFlag: null });
});

Deno.test("parseArgs: unknown flags, missing or repeated values and positionals are usage errors", () => {
  const cases: [string[], RegExp][] = [
    [["--conifg", "x.json"], /^unknown flag --conifg \(did you mean --config\?\)$/],
    [["--chek"], /did you mean --check\?/],
    [["--listen=8080"], /^unknown flag --listen$/],
    [["-A"], /^unknown flag -A$/],
    [["--config"], /needs a path/],
    [["--config="], /needs a path/],
    [["--config", "--check"], /needs a path/],
    [["--config", "a.json", "--config=b.json"], /more than once/],
    [["breakwater.json"], /unexpected argument "breakwater.json"/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseArgs(args), (error: unknown) => {
      assert.ok(error instanceof UsageError, args.join(" "));
      assert.match(error.message, message, args.join(" "));
      return true;
    });
  }
});

Deno.test("configPathFor: --config, else BREAKWATER_CONFIG, else ./breakwater.json", () => {
  assert.equal(configPathFor("/a.json", { BREAKWATER_CONFIG: "/b.json" }), "/a.json");
  assert.equal(configPathFor(null, { BREAKWATER_CONFIG: "/b.json" }), "/b.json");
  assert.equal(configPathFor(null, { BREAKWATER_CONFIG: "" }), "./breakwater.json");
  assert.equal(configPathFor(null, {}), "./breakwater.json");
});
