/**
 * Small promise helpers in the shape of Deno std's `async/` (which this project cannot import):
 * one concern per file.
 *
 * @module
 */
export { abortable } from "./abortable.ts";
export { delay, type DelayOptions } from "./delay.ts";
export { deadline, DeadlineError, type DeadlineOptions } from "./deadline.ts";
export { settlesAtOnce } from "./settles_at_once.ts";
