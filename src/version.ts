/**
 * The gateway's version, from `deno.json`, so `--version`, the package, telemetry's
 * `breakwater.build.info` and the image agree.
 *
 * @module
 */
import denoConfig from "../deno.json" with { type: "json" };

/** The `version` of `deno.json`. */
export const VERSION: string = denoConfig.version;
