/**
 * The config file's JSON Schema, generated from the zod schema that validates it, so editors
 * (VS Code's `"$schema"`, SchemaStore-aware tools) complete and check `breakwater.json` with
 * the same rules the gateway applies. `deno task schema` writes `breakwater.schema.json`; a test
 * fails when the committed file is stale.
 *
 * Rules zod cannot express in JSON Schema (refinements such as "an http(s) URL without
 * credentials", the prefix rules, cross-field checks) are still enforced at start-up and by
 * `--check`; the schema is the shape, types, ranges and defaults.
 *
 * @module
 */
import { z } from "zod";
import { configFileSchema, defaultsSchema, serviceSchema } from "./schema.ts";

/** Where `deno task schema` writes the schema, relative to the project folder. */
export const SCHEMA_FILE = "breakwater.schema.json";

/**
 * The JSON Schema (draft 2020-12) of the config file, as the file is written: `services` hold
 * the service shape, `defaults` any service key.
 *
 * @example
 * ```ts
 * const schema = configJsonSchema();
 * schema.properties.services; // { type: "object", additionalProperties: { ... } }
 * ```
 */
export function configJsonSchema(): Record<string, unknown> & {
  properties: Record<string, unknown>;
} {
  const file = z.strictObject({
    ...configFileSchema.shape,
    defaults: defaultsSchema.optional(),
    services: z.record(z.string(), serviceSchema),
  });
  const schema = z.toJSONSchema(file, { io: "input", unrepresentable: "any" });
  return {
    ...schema,
    $id: "https://breakwater.dev/breakwater.schema.json",
    title: "Breakwater gateway configuration",
  } as Record<string, unknown> & { properties: Record<string, unknown> };
}

/** The schema as the committed file holds it (two-space JSON, final newline). */
export function configJsonSchemaText(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + "\n";
}

if (import.meta.main) {
  await Deno.writeTextFile(SCHEMA_FILE, configJsonSchemaText());
  console.log(`wrote ${SCHEMA_FILE}`);
}
