/**
 * The command line as a user meets it: real `deno` processes running src/main.ts directly
 * (with hand-picked permissions) and through the launcher behind `deno task start`.
 */
import assert from "node:assert/strict";
import {
  DENO_JSON,
  LAUNCHER,
  MAIN,
  ROOT,
  runDeno,
  smallConfig,
  spawnDeno,
  taskFlags,
  tempConfig,
} from "./_run.ts";
import { readCgroupLimits } from "../../src/config/cgroup.ts";
import { resolveWorkerCount } from "../../src/workers/count.ts";

const VERSION = JSON.parse(Deno.readTextFileSync(DENO_JSON)).version as string;

/** `deno run` of src/main.ts with exactly these permission flags. */
function runMain(flags: string[], args: string[], env?: Record<string, string>) {
  return runDeno(["run", `--config=${DENO_JSON}`, "--no-prompt", ...flags, MAIN, ...args], {
    env,
  });
}

/** The flags `deno task start` runs the launcher with, read from deno.json. */
const START_FLAGS = taskFlags("start");

Deno.test("--help lists every flag and every environment variable the gateway reads, exit 0", async () => {
  const { code, stdout, stderr } = await runMain([], ["--help"]);
  assert.equal(code, 0, stderr);
  for (const flag of ["--config PATH", "--config=PATH", "--check", "--help", "--version"]) {
    assert.ok(stdout.includes(flag), `usage lacks ${flag}`);
  }
  // Whatever src/ reads from the environment must be in the usage, so the text cannot fall
  // behind the code. (BREAKWATER_CONFIG_JSON is only the name in mod.ts's embedding example.)
  const read = new Set(["PORT"]);
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.name.endsWith(".ts")) {
        for (
          const match of Deno.readTextFileSync(path).matchAll(
            /\b(?:BREAKWATER|OTEL|DENO_KV)_[A-Z_]*[A-Z]\b/g,
          )
        ) {
          read.add(match[0]);
        }
      }
    }
  };
  walk(`${ROOT}/src`);
  read.delete("BREAKWATER_CONFIG_JSON");
  for (const name of read) assert.ok(stdout.includes(name), `usage lacks ${name}`);
  assert.equal(stderr, "");
});

Deno.test("--version prints the version from deno.json, exit 0", async () => {
  const { code, stdout } = await runMain([], ["--version"]);
  assert.equal(code, 0);
  assert.equal(stdout, `breakwater ${VERSION}\n`);
});

Deno.test("--check validates and summarises without listening or opening KV, exit 0", async () => {
  // The listen port is held by this test: a gateway that tried to listen would fail.
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  // One thread: the summary then names no workers (the next test covers the thread count).
  const temp = await tempConfig((dir) => ({
    ...smallConfig(`${dir}/state/bw.kv`, port),
    workers: 1,
  }));
  try {
    const { code, stdout, stderr } = await runMain(
      [
        "--allow-env",
        `--allow-read=${temp.configPath},${temp.dir}/state,/sys/fs/cgroup`,
        `--allow-write=${temp.dir}/state`,
      ],
      ["--check", "--config", temp.configPath],
      { PORT: "" },
    );
    assert.equal(code, 0, stderr);
    assert.equal(
      stdout,
      `breakwater: config ${temp.configPath} OK: 2 services (catalog /api/catalog, ` +
        `orders /api/orders), listen 127.0.0.1:${port}, admin 127.0.0.1:0, ` +
        `kv ${temp.dir}/state/bw.kv\n`,
    );
    assert.equal(stderr, "");
    await assert.rejects(Deno.stat(`${temp.dir}/state`), Deno.errors.NotFound);
  } finally {
    held.close();
    await temp.cleanup();
  }
});

Deno.test("--check names the worker threads start-up would run", async () => {
  const temp = await tempConfig(() => ({ ...smallConfig(":memory:"), workers: 3 }));
  try {
    const { code, stdout, stderr } = await runMain(
      ["--allow-env", `--allow-read=${temp.configPath},/sys/fs/cgroup`],
      ["--check", "--config", temp.configPath],
      { PORT: "" },
    );
    assert.equal(code, 0, stderr);
    assert.match(stdout, /, listen 127\.0\.0\.1:0, 3 workers, admin /);
  } finally {
    await temp.cleanup();
  }
  // The default is "auto": the cgroup's CPU quota, else the cores, as this process reads them.
  const auto = await tempConfig(() => smallConfig(":memory:"));
  try {
    const { code, stdout, stderr } = await runMain(
      ["--allow-env", "--allow-sys", `--allow-read=${auto.configPath},/sys/fs/cgroup`],
      ["--check", "--config", auto.configPath],
      { PORT: "" },
    );
    assert.equal(code, 0, stderr);
    const expected = resolveWorkerCount("auto", readCgroupLimits());
    const named = expected === 1 ? "" : `, ${expected} workers`;
    assert.ok(stdout.includes(`, listen 127.0.0.1:0${named}, admin `), stdout);
  } finally {
    await auto.cleanup();
  }
  // A TLS listener keeps "auto" to one thread without a word; a number asked for is named.
  const certs = await tempConfig(() => ({}));
  try {
    const pem = (name: string) => `${certs.dir}/${name}.pem`;
    const made = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
      ]
        .concat(["-keyout", pem("key"), "-out", pem("cert")]),
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(made.success, "openssl made a certificate");
    const tls = { certFile: pem("cert"), keyFile: pem("key") };
    for (const [workers, suffix] of [[undefined, ""], [2, ", 1 thread (2 workers asked; "]]) {
      await Deno.writeTextFile(
        certs.configPath,
        JSON.stringify({ ...smallConfig(":memory:"), listen: { port: 0, tls }, workers }),
      );
      const { code, stdout, stderr } = await runMain(
        [
          "--allow-env",
          "--allow-sys",
          // The certificate pair is tried on a loopback listener at validation.
          "--allow-net=127.0.0.1",
          `--allow-read=${certs.configPath},${certs.dir},/sys/fs/cgroup`,
        ],
        ["--check", "--config", certs.configPath],
        { PORT: "" },
      );
      assert.equal(code, 0, stderr);
      assert.ok(stdout.includes(`, listen 0.0.0.0:0 (HTTPS)${suffix}`), stdout);
      if (suffix === "") assert.ok(stdout.includes("(HTTPS), admin "), stdout);
    }
  } finally {
    await certs.cleanup();
  }
});

Deno.test("--check on an invalid config prints every problem and exits 2", async () => {
  const temp = await tempConfig(() => ({
    services: { users: { prefix: "/api/users", upstreams: ["ftp://x"], colour: "red" } },
  }));
  try {
    const { code, stdout, stderr } = await runMain(
      ["--allow-env", `--allow-read=${temp.configPath}`],
      ["--config=" + temp.configPath, "--check"],
    );
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.match(stderr, new RegExp(`^breakwater: invalid config ${temp.configPath}\n`));
    assert.match(stderr, /services\.users\.upstreams\[0\]: must be an http\(s\) URL/);
    assert.match(stderr, /services\.users\.colour: unknown key/);
  } finally {
    await temp.cleanup();
  }
});

Deno.test("an unknown flag exits 2 with a suggestion and the usage on stderr, before any config is read", async () => {
  // No permissions at all: the command line is rejected before anything else happens.
  const { code, stdout, stderr } = await runMain([], ["--conifg", "/etc/breakwater/gw.json"]);
  assert.equal(code, 2);
  assert.equal(stdout, "");
  assert.match(stderr, /^breakwater: unknown flag --conifg \(did you mean --config\?\)\n/);
  assert.match(stderr, /Usage:/);
});

Deno.test("--config without a value exits 2 with the usage", async () => {
  for (const args of [["--config"], ["--config", "--check"], ["--config="]]) {
    const { code, stderr } = await runMain([], args);
    assert.equal(code, 2, args.join(" "));
    assert.match(stderr, /^breakwater: --config needs a path/, args.join(" "));
    assert.match(stderr, /Usage:/);
  }
});

Deno.test("a config Deno may not read is a permission error naming the flag, exit 1, not 'invalid config'", async () => {
  const temp = await tempConfig((dir) => smallConfig(`${dir}/bw.kv`));
  try {
    const { code, stderr } = await runMain(
      ["--allow-env", "--allow-read=/sys/fs/cgroup"],
      ["--config", temp.configPath],
    );
    assert.equal(code, 1);
    assert.ok(!stderr.includes("invalid config"), stderr);
    assert.match(stderr, /not granted read access to the config/);
    assert.ok(stderr.includes(`--allow-read=${temp.configPath}`), stderr);
  } finally {
    await temp.cleanup();
  }
});

Deno.test("a kv.path outside the granted folders is a permission error naming both flags, exit 1", async () => {
  const temp = await tempConfig((dir) => smallConfig(`${dir}/state/bw.kv`));
  try {
    const { code, stderr } = await runMain(
      ["--allow-env", "--allow-net", `--allow-read=${temp.configPath}`, "--allow-write=./data"],
      ["--config", temp.configPath],
    );
    assert.equal(code, 1);
    assert.ok(!stderr.includes("invalid config"), stderr);
    assert.match(stderr, /not granted read and write access to the KV folder/);
    assert.ok(stderr.includes(`--allow-read=${temp.dir}/state`), stderr);
    assert.ok(stderr.includes(`--allow-write=${temp.dir}/state`), stderr);
  } finally {
    await temp.cleanup();
  }
});

Deno.test("a port in use stops start-up with exit 1 and says which address", async () => {
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  const temp = await tempConfig(() => smallConfig(":memory:", port));
  try {
    // The default ("auto") runs workers where there are cores for them: they load the
    // gateway's code, so it is granted as `deno task start` grants it.
    const { code, stderr } = await runMain(
      [
        "--allow-env",
        "--allow-net",
        "--allow-sys",
        `--allow-read=${temp.configPath},${ROOT}/src,${DENO_JSON}`,
      ],
      ["--config", temp.configPath],
      { BREAKWATER_LOG_LEVEL: "off" },
    );
    assert.equal(code, 1);
    assert.match(
      stderr,
      new RegExp(
        `cannot listen on 127\\.0\\.0\\.1:${port} \\(public\\): the address is already in use`,
      ),
    );
  } finally {
    held.close();
    await temp.cleanup();
  }
});

/** The child's command line, found through /proc (Linux). */
function childCommandLine(parentPid: number): string[] {
  // Deno gates /proc/<pid> behind --allow-all; `cat` under --allow-run reads it just as well.
  const read = (path: string) =>
    new TextDecoder().decode(new Deno.Command("cat", { args: [path] }).outputSync().stdout);
  const children = read(`/proc/${parentPid}/task/${parentPid}/children`).trim();
  assert.ok(children !== "", "the launcher has no child");
  const pid = children.split(/\s+/)[0];
  return read(`/proc/${pid}/cmdline`).split("\0").filter((word) => word !== "");
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`launcher: config and KV outside the project get exactly their paths; SIGHUP reloads, ${signal} drains, exit 0`, async () => {
    const temp = await tempConfig((dir) => smallConfig(`${dir}/state/nested/bw.kv`));
    const launcher = spawnDeno(["run", ...START_FLAGS, LAUNCHER, "--config", temp.configPath]);
    try {
      const listening = JSON.parse(
        await launcher.waitForLine((line) => line.includes('"msg":"listening"')),
      );
      const response = await fetch(`http://127.0.0.1:${listening.port}/healthz`);
      assert.equal(response.status, 200);
      await response.body?.cancel();

      // The gateway created the KV folder itself; the launcher granted it that folder only.
      assert.ok((await Deno.stat(`${temp.dir}/state/nested/bw.kv`)).isFile);
      const command = childCommandLine(launcher.child.pid);
      const kvFolder = `${temp.dir}/state/nested`;
      // The default ("auto") may run workers, which load the gateway's code: read only.
      assert.ok(
        command.includes(
          `--allow-read=${temp.configPath},${kvFolder},${ROOT}/src,${DENO_JSON},` +
            `/sys/fs/cgroup,/proc/self`,
        ),
        command.join(" "),
      );
      assert.ok(command.includes(`--allow-write=${kvFolder}`), command.join(" "));
      for (const broad of ["-A", "--allow-all", "--allow-run", "--allow-ffi", "--allow-read"]) {
        assert.ok(!command.includes(broad), `child got ${broad}`);
      }

      // SIGHUP reaches the gateway through the launcher and reloads instead of draining.
      launcher.child.kill("SIGHUP");
      await launcher.waitForLine((line) => line.includes('"msg":"config reloaded"'));
      const afterReload = await fetch(`http://127.0.0.1:${listening.port}/healthz`);
      assert.equal(afterReload.status, 200);
      await afterReload.body?.cancel();

      const status = await launcher.stop(signal);
      assert.equal(status.code, 0, launcher.stderr());
      assert.ok(
        launcher.lines.some((line) =>
          line.includes('"msg":"shutdown started"') && line.includes(signal)
        ),
        launcher.lines.join("\n"),
      );
      assert.ok(launcher.lines.some((line) => line.includes('"msg":"shutdown complete"')));
    } finally {
      await launcher.stop("SIGKILL");
      await temp.cleanup();
    }
  });
}

Deno.test("launcher: --check validates a config and KV folder outside the project, exit 0", async () => {
  const temp = await tempConfig((dir) => smallConfig(`${dir}/kv/bw.kv`));
  try {
    const { code, stdout, stderr } = await runDeno(
      ["run", ...START_FLAGS, LAUNCHER, "--check", "--config", temp.configPath],
    );
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^breakwater: config .* OK: 2 services/);
  } finally {
    await temp.cleanup();
  }
});

Deno.test("launcher: BREAKWATER_CONFIG picks the config when --config is absent; an invalid one exits 2", async () => {
  const temp = await tempConfig(() => ({ services: {} }));
  try {
    const { code, stderr } = await runDeno(["run", ...START_FLAGS, LAUNCHER, "--check"], {
      env: { BREAKWATER_CONFIG: temp.configPath },
    });
    assert.equal(code, 2);
    assert.match(
      stderr,
      new RegExp(`invalid config ${temp.configPath}\nservices: needs at least one service`),
    );
  } finally {
    await temp.cleanup();
  }
});

Deno.test("deno task start passes flags through, with or without --", async () => {
  for (const args of [["--version"], ["--", "--version"]]) {
    const { code, stdout } = await runDeno(["task", "-q", "start", ...args]);
    assert.equal(code, 0, args.join(" "));
    assert.equal(stdout, `breakwater ${VERSION}\n`);
  }
  const { code, stderr } = await runDeno(["task", "-q", "start", "--conifg", "x.json"]);
  assert.equal(code, 2);
  assert.match(stderr, /unknown flag --conifg/);
});
