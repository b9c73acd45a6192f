/**
 * Interim (1xx) responses a handler sends before its final one (RFC 9110 §15.2), such as
 * `103 Early Hints` (RFC 8297): the head's bytes, and the per-request gate that decides whether
 * one may still go out.
 *
 * The gate follows RFC 9110 §15.2: never to an HTTP/1.0 client (it cannot tell an interim head
 * from the final one), only before the final response head and never once the request was
 * answered. `100 Continue` stays the server's own (sent when the request body is first read,
 * `_request_body.ts`) and `101` is the connection takeover's; neither goes through here.
 *
 * @module
 */
import { isHopByHop, namedByConnection } from "../proxy/headers.ts";
import type { Connection } from "./_connection.ts";
import { reasonPhrase } from "./_response_writer.ts";
import { TOKEN } from "./token.ts";

/** Interim responses one request may send: a handler looping on them cannot flood the client. */
export const MAX_INFORMATIONAL_PER_REQUEST = 16;

/** A field value as RFC 9110 §5.5 allows it: no CR, LF or NUL (which would split the head). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Framing fields mean nothing on an interim head (RFC 9110 §15.2: it has no content). */
const NOT_ON_INTERIM = new Set(["content-length", "date"]);

/** Sends one interim response; false when it may not go out (see {@link createInformationalGate}). */
export type SendInformational = (status: number, fields: [string, string][]) => boolean;

/**
 * The head of an interim response: status line and fields, hop-by-hop fields removed (RFC 9110
 * §7.6.1: the listed ones and every field the `Connection` field names), names lower-cased.
 * Null for a status outside 102-199 or a field that is not a valid name or value.
 *
 * @example
 * ```ts
 * informationalHead(103, [["Link", "</style.css>; rel=preload"]]);
 * // "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" as bytes
 * ```
 */
export function informationalHead(status: number, fields: [string, string][]): Uint8Array | null {
  if (!Number.isInteger(status) || status < 102 || status > 199) return null;
  const named = namedByConnection(fields);
  let text = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
  for (const [name, value] of fields) {
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) return null;
    const lower = name.toLowerCase();
    if (isHopByHop(lower, named) || NOT_ON_INTERIM.has(lower)) continue;
    text += `${lower}: ${value.trim()}\r\n`;
  }
  text += "\r\n";
  const bytes = new Uint8Array(text.length);
  // Latin-1, one byte per character: values may carry obs-text.
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** One request's interim-response gate. */
export interface InformationalGate {
  /** Sends an interim response now (queued behind any still being written). */
  send: SendInformational;
  /** The final response is decided: no interim response may follow. */
  close(): void;
}

/**
 * The gate of one request on `connection`. `send` writes without waiting (the final head waits
 * for it through `connection.pendingWrite`); a failed write is left for the final response's
 * write to find.
 *
 * @example
 * ```ts
 * const gate = createInformationalGate(connection);
 * gate.send(103, [["link", "</app.js>; rel=preload"]]);
 * gate.close(); // before the final head goes out
 * ```
 */
export function createInformationalGate(connection: Connection): InformationalGate {
  let open = true;
  let sent = 0;
  return {
    send(status, fields) {
      if (!open || connection.closed || sent >= MAX_INFORMATIONAL_PER_REQUEST) return false;
      const head = informationalHead(status, fields);
      if (head === null) return false;
      sent++;
      connection.writeInterim(head).catch(() => {});
      return true;
    },
    close() {
      open = false;
    },
  };
}
