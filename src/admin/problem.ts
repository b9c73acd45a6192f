/**
 * The admin API's error answers: RFC 9457 problem details, never cached.
 *
 * @module
 */

/** The body of an admin problem answer. */
export function adminBody(
  status: number,
  title: string,
  detail?: string,
): { type: string; title: string; status: number; detail?: string } {
  return { type: "about:blank", title, status, detail };
}

/** An `application/problem+json` answer (RFC 9457) with `cache-control: no-store`. */
export function adminProblem(status: number, title: string, detail?: string): Response {
  return new Response(JSON.stringify(adminBody(status, title, detail)), {
    status,
    headers: { "content-type": "application/problem+json", "cache-control": "no-store" },
  });
}
