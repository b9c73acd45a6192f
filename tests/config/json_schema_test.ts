import assert from "node:assert/strict";
import { configJsonSchema, configJsonSchemaText } from "../../src/config/json_schema.ts";
import { parseConfig } from "../../src/config/schema.ts";

const ROOT = new URL("../../", import.meta.url);

Deno.test("breakwater.schema.json is the schema the code generates (run deno task schema)", () => {
  const committed = Deno.readTextFileSync(new URL("breakwater.schema.json", ROOT));
  assert.equal(committed, configJsonSchemaText(), "stale: run `deno task schema`");
});

Deno.test("the schema describes every top-level and service key the gateway accepts", () => {
  const schema = configJsonSchema();
  for (const key of ["$schema", "listen", "admin", "kv", "telemetry", "limits", "defaults"]) {
    assert.ok(key in schema.properties, key);
  }
  const services = schema.properties.services as {
    additionalProperties: { properties: Record<string, { default?: unknown }> };
  };
  const service = services.additionalProperties.properties;
  for (const key of ["prefix", "upstreams", "timeoutMs", "breaker", "escapedSlashes"]) {
    assert.ok(key in service, key);
  }
  assert.equal(service.upstreamClient.default, "http1");
  assert.equal(service.escapedSlashes.default, "reject");
});

Deno.test("the shipped configs point editors at the schema and are valid", () => {
  for (const path of ["breakwater.json", "demo/breakwater.json"]) {
    const json = JSON.parse(Deno.readTextFileSync(new URL(path, ROOT)));
    assert.equal(
      json.$schema,
      path.includes("/") ? "../breakwater.schema.json" : "./breakwater.schema.json",
    );
    parseConfig(json);
  }
});
