/**
 * Whether a promise settles within the current turn of the event loop.
 *
 * @module
 */

/**
 * True when `promise` settles (either way) before a zero-delay timer fires: every microtask
 * already queued runs first, so bytes already at hand (a chunk queued in a stream, or pulled
 * from bytes already read) count as "at once", bytes still on their way do not. The upstream
 * clients use it to send a response head together with a small body when the body is there.
 *
 * @example
 * ```ts
 * const read = reader.read();
 * if (await settlesAtOnce(read)) writeHeadWithBody(await read);
 * else writeHeadAlone();
 * ```
 */
export async function settlesAtOnce(promise: Promise<unknown>): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 0));
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
