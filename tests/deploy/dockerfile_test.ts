/**
 * The Dockerfile, checked without a container engine: its permissions are the launcher's
 * derivation for the shipped config, its healthcheck runs for real with bash against a real
 * server, and the dependency pruning its build does leaves only the gateway's packages (run
 * here with the same commands on a copy of the project).
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import {
  mayRunWorkers,
  permissionFlags,
  permissionsFor,
  workerCodePaths,
} from "../../src/launch.ts";
import { pruneDeps } from "../../deploy/docker/prune_deps.ts";
import { envOf, last, readDockerfile } from "./_dockerfile.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
const stages = readDockerfile(`${ROOT}/Dockerfile`);
const image = stages.at(-1)!;

/** Packages only the tests load; none may reach the image. */
const TEST_ONLY_PACKAGES = ["@sinonjs/fake-timers", "playwright-core", "yaml"];

Deno.test("Dockerfile: CMD grants exactly what the launcher derives for the shipped config", () => {
  const cmd: string[] = JSON.parse(last(image, "CMD"));
  const workdir = last(image, "WORKDIR");
  const configPath = envOf(image).BREAKWATER_CONFIG;
  assert.equal(configPath, `${workdir}/breakwater.json`);
  assert.ok(
    image.some(({ keyword, args }) =>
      keyword === "COPY" && args === `breakwater.json ./breakwater.json`
    ),
    "the shipped config is copied where BREAKWATER_CONFIG points",
  );
  const shipped = parseConfig(JSON.parse(Deno.readTextFileSync(`${ROOT}/breakwater.json`)));
  // The shipped config may run workers ("auto"): they read the gateway's code under WORKDIR.
  assert.ok(mayRunWorkers(shipped));
  const derived = permissionFlags(
    permissionsFor(configPath, shipped.kv.path, workdir, workerCodePaths(workdir)),
  );

  assert.equal(cmd[0], "run");
  assert.equal(cmd.at(-1), "src/main.ts");
  const permissions = cmd.filter((word) => word.startsWith("--allow-"));
  assert.deepEqual(permissions, derived);
  assert.ok(!cmd.includes("-A") && !cmd.includes("--allow-all"));
  // The image runs from its cache only, and a missing permission fails instead of prompting.
  for (const flag of ["--frozen", "--cached-only", "--no-prompt"]) assert.ok(cmd.includes(flag));
  // The KV folder is created in the image and owned by the user the gateway runs as.
  const kvFolder = permissionsFor(configPath, shipped.kv.path, workdir).write[0];
  assert.ok(
    image.some(({ keyword, args }) =>
      keyword === "RUN" && args.includes(`mkdir -p ${kvFolder}`) &&
      args.includes(`chown deno:deno ${kvFolder}`)
    ),
  );
  assert.equal(last(image, "USER"), "deno");
});

Deno.test("Dockerfile: the public and admin ports are exposed and PORT matches the public one", () => {
  assert.deepEqual(last(image, "EXPOSE").split(/\s+/), ["8080", "9901"]);
  assert.equal(envOf(image).PORT, "8080");
});

Deno.test("Dockerfile: type-checked at build, only the entry point's packages installed, frozen", () => {
  const runs = stages.flat().filter(({ keyword }) => keyword === "RUN").map(({ args }) => args);
  assert.ok(runs.some((run) => run.includes("deno check --frozen src/main.ts")));
  assert.ok(runs.some((run) => run.includes("deno install --frozen --entrypoint src/main.ts")));
  assert.ok(runs.some((run) => run.includes("deploy/docker/prune_deps.ts graph.json")));
  // The image's own packages come from the pruned deno.json and deno.lock of the first stage.
  assert.ok(
    image.some(({ keyword, args }) =>
      keyword === "COPY" && args.startsWith("--from=deps") && args.includes("deno.lock")
    ),
  );
  for (const run of runs) {
    assert.ok(!/\bdeno cache\b/.test(run), `deno cache type-checks nothing: ${run}`);
  }
});

/** Runs the image's HEALTHCHECK command with bash, as Docker would, against PORT `port`. */
async function healthcheck(port: number): Promise<number> {
  const match = /CMD (\[.*\])$/.exec(last(image, "HEALTHCHECK"));
  assert.ok(match, "HEALTHCHECK has an exec-form CMD");
  const [program, ...args]: string[] = JSON.parse(match[1]);
  assert.equal(program, "bash");
  assert.ok(!args.join(" ").includes("deno"), "the healthcheck must not start Deno");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 5_000);
  try {
    const { code } = await new Deno.Command(program, {
      args,
      env: { PORT: String(port) },
      stdout: "null",
      stderr: "null",
      signal: controller.signal,
    }).output();
    return code;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("Dockerfile: the healthcheck passes on 200 from /healthz and fails on 503 or nothing listening", async () => {
  let status = 200;
  const paths: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    paths.push(new URL(request.url).pathname);
    return new Response("ok", { status });
  });
  try {
    assert.equal(await healthcheck(server.addr.port), 0);
    status = 503;
    assert.notEqual(await healthcheck(server.addr.port), 0);
    assert.deepEqual(paths, ["/healthz", "/healthz"]);
  } finally {
    await server.shutdown();
  }
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  assert.notEqual(await healthcheck(closedPort), 0);
});

/** `deno <args>` in `cwd`, bounded; returns stdout or throws with stderr. */
async function deno(args: string[], cwd: string): Promise<string> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 60_000);
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, `deno ${args.join(" ")}: ${stderr}`);
    return new TextDecoder().decode(output.stdout);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("image dependencies: the pruned deno.json and deno.lock install only what src/main.ts loads", async () => {
  const graph = JSON.parse(await deno(["info", "--json", "src/main.ts"], ROOT));
  const { config, lock } = pruneDeps(
    JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)),
    JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.lock`)),
    graph,
  );
  const kept = Object.keys(lock.npm ?? {});
  for (const name of TEST_ONLY_PACKAGES) {
    assert.ok(!kept.some((id) => id.startsWith(`${name}@`)), `${name} is pruned`);
    assert.ok(!Object.values(config.imports ?? {}).some((target) => target.includes(name)));
  }
  for (const name of ["hono", "zod", "@opentelemetry/sdk-metrics"]) {
    assert.ok(kept.some((id) => id.startsWith(`${name}@`)), `${name} is kept`);
  }

  // What the image's second stage does, on a copy: a frozen install must accept the pruned pair.
  const dir = await Deno.makeTempDir({ prefix: "breakwater-image-" });
  try {
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify(config, null, 2));
    await Deno.writeTextFile(`${dir}/deno.lock`, JSON.stringify(lock, null, 2));
    await new Deno.Command("cp", { args: ["-r", `${ROOT}/src`, `${dir}/src`] }).output();
    await deno(["install", "--frozen", "--entrypoint", "src/main.ts"], dir);
    const installed = [...Deno.readDirSync(`${dir}/node_modules/.deno`)].map((entry) => entry.name);
    for (const name of TEST_ONLY_PACKAGES) {
      const folder = name.replace("/", "+");
      assert.ok(!installed.some((entry) => entry.startsWith(`${folder}@`)), `${name} installed`);
    }
    assert.ok(installed.some((entry) => entry.startsWith("hono@")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
