/**
 * A small reader of the project's Dockerfile for the deploy tests: instructions with their
 * line continuations joined, grouped by build stage.
 *
 * @module
 */

/** One instruction, e.g. `{ keyword: "CMD", args: '["run", ...]' }`. */
export interface Instruction {
  keyword: string;
  args: string;
}

/** Reads `path` into build stages (each starts at a FROM), comments and blank lines dropped. */
export function readDockerfile(path: string): Instruction[][] {
  const logical: string[] = [];
  let pending = "";
  for (const raw of Deno.readTextFileSync(path).split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue; // a comment inside a continued instruction
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    logical.push(pending + line);
    pending = "";
  }
  const stages: Instruction[][] = [];
  for (const line of logical) {
    const space = line.indexOf(" ");
    const instruction = {
      keyword: line.slice(0, space).toUpperCase(),
      args: line.slice(space + 1).trim(),
    };
    if (instruction.keyword === "FROM") stages.push([]);
    stages.at(-1)?.push(instruction);
  }
  return stages;
}

/** The `KEY=value` pairs of every ENV instruction in `stage`. */
export function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { keyword, args } of stage) {
    if (keyword !== "ENV") continue;
    for (const match of args.matchAll(/([A-Z_][A-Z0-9_]*)=("[^"]*"|\S+)/g)) {
      env[match[1]] = match[2].replace(/^"|"$/g, "");
    }
  }
  return env;
}

/** The single instruction `keyword` of `stage` (the last one, as Docker uses). */
export function last(stage: Instruction[], keyword: string): string {
  const found = stage.filter((instruction) => instruction.keyword === keyword).at(-1);
  if (found === undefined) throw new Error(`no ${keyword} in the stage`);
  return found.args;
}
