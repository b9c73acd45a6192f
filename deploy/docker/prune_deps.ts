/**
 * Prunes `deno.json` and `deno.lock` to the npm packages the gateway loads, for the container
 * image.
 *
 * `deno install --entrypoint src/main.ts` still installs every npm package of the import map
 * and the lock file, test-only ones included (Deno treats both as the project's dependency
 * list). The image build therefore asks Deno for the module graph of `src/main.ts`
 * (`deno info --json`) and keeps only the packages that graph reaches. The integrity hashes are
 * the committed lock file's own, and the image's `deno install --frozen` fails if the pruned
 * pair is inconsistent, so pruning can drop packages but never change one.
 *
 * Usage (from the project folder, as the Dockerfile does):
 *
 * ```sh
 * deno info --json src/main.ts > graph.json
 * deno run --allow-read=. --allow-write=. deploy/docker/prune_deps.ts graph.json
 * ```
 *
 * @module
 */

/** The part of `deno info --json` this reads. */
export interface ModuleGraph {
  /** Every module; npm ones have `kind: "npm"` and the package id in `npmPackage`. */
  modules: { kind?: string; npmPackage?: string }[];
  /** Every resolved npm package by id (`name@version[_peers]`), with the ids it depends on. */
  npmPackages: Record<string, { dependencies?: string[] }>;
}

/** A `deno.lock` (version 5): only the sections pruning touches are typed. */
export interface LockFile {
  /** `"npm:hono@4.13.19"` -> `"4.13.19"` (the resolved version and peer suffix). */
  specifiers?: Record<string, string>;
  /** Package id -> integrity and dependencies. */
  npm?: Record<string, unknown>;
  /** The config's own dependency list. */
  workspace?: { dependencies?: string[]; [key: string]: unknown };
  [key: string]: unknown;
}

/** A `deno.json`: only `imports` is touched. */
export interface DenoConfig {
  /** The import map. */
  imports?: Record<string, string>;
  [key: string]: unknown;
}

/** The npm package ids the graph loads, with everything they depend on. */
export function packagesOfGraph(graph: ModuleGraph): Set<string> {
  const reached = new Set<string>();
  const pending = graph.modules.flatMap((module) =>
    module.kind === "npm" && module.npmPackage ? [module.npmPackage] : []
  );
  while (pending.length > 0) {
    const id = pending.pop()!;
    if (reached.has(id)) continue;
    reached.add(id);
    pending.push(...(graph.npmPackages[id]?.dependencies ?? []));
  }
  return reached;
}

/** `npm:@scope/name@1.2.3/sub/path` or `npm:/name@1.2.3/` -> `npm:@scope/name@1.2.3`. */
export function npmRequirement(specifier: string): string | null {
  const match = /^npm:\/?((?:@[^/]+\/)?[^/@]+@[^/]+)/.exec(specifier);
  return match ? `npm:${match[1]}` : null;
}

/** `npm:@scope/name@1.2.3` resolved to `3.0.0_peer` -> package id `@scope/name@3.0.0_peer`. */
function packageId(requirement: string, resolved: string): string {
  const nameAndRange = requirement.slice("npm:".length);
  const name = nameAndRange.slice(0, nameAndRange.indexOf("@", 1));
  return `${name}@${resolved}`;
}

/**
 * `config` and `lock` with every npm package the graph does not reach removed: import map
 * entries, lock specifiers, lock packages and the workspace dependency list. Anything that is
 * not npm is kept as it is.
 */
export function pruneDeps(
  config: DenoConfig,
  lock: LockFile,
  graph: ModuleGraph,
): { config: DenoConfig; lock: LockFile } {
  const packages = packagesOfGraph(graph);
  const specifiers = Object.fromEntries(
    Object.entries(lock.specifiers ?? {}).filter(([specifier, resolved]) =>
      !specifier.startsWith("npm:") || packages.has(packageId(specifier, resolved))
    ),
  );
  const keep = (specifier: string) => {
    const requirement = npmRequirement(specifier);
    return requirement === null || requirement in specifiers;
  };
  const prunedLock: LockFile = {
    ...lock,
    specifiers,
    npm: Object.fromEntries(Object.entries(lock.npm ?? {}).filter(([id]) => packages.has(id))),
  };
  if (lock.workspace?.dependencies) {
    prunedLock.workspace = {
      ...lock.workspace,
      dependencies: lock.workspace.dependencies.filter(keep),
    };
  }
  const imports = Object.fromEntries(
    Object.entries(config.imports ?? {}).filter(([, target]) => keep(target)),
  );
  return { config: { ...config, imports }, lock: prunedLock };
}

if (import.meta.main) {
  const [graphPath] = Deno.args;
  if (graphPath === undefined) {
    console.error("usage: deno run --allow-read=. --allow-write=. prune_deps.ts GRAPH_JSON");
    Deno.exit(2);
  }
  const { config, lock } = pruneDeps(
    JSON.parse(Deno.readTextFileSync("deno.json")),
    JSON.parse(Deno.readTextFileSync("deno.lock")),
    JSON.parse(Deno.readTextFileSync(graphPath)),
  );
  Deno.writeTextFileSync("deno.json", JSON.stringify(config, null, 2) + "\n");
  Deno.writeTextFileSync("deno.lock", JSON.stringify(lock, null, 2) + "\n");
  console.log(`kept npm packages: ${Object.keys(lock.npm ?? {}).sort().join(", ")}`);
}
