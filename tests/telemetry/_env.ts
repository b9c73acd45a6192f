/**
 * Runs a test body with `OTEL_*` variables set in the real process environment, where the
 * OpenTelemetry SDK reads them, and restores the previous values afterwards. Every `OTEL_*`
 * variable not named is unset for the duration, so a developer's shell cannot leak in.
 *
 * @module
 */

/** Sets `vars` (undefined unsets), runs `fn`, restores the environment even when `fn` throws. */
export async function withEnv<T>(
  vars: Record<string, string | undefined>,
  fn: () => T | Promise<T>,
): Promise<T> {
  const saved = new Map<string, string | undefined>();
  const keys = new Set([
    ...Object.keys(vars),
    ...Object.keys(Deno.env.toObject()).filter((key) => key.startsWith("OTEL_")),
  ]);
  for (const key of keys) {
    saved.set(key, Deno.env.get(key));
    const value = vars[key];
    if (value === undefined) Deno.env.delete(key);
    else Deno.env.set(key, value);
  }
  try {
    return await fn();
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) Deno.env.delete(key);
      else Deno.env.set(key, value);
    }
  }
}
