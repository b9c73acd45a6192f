/**
 * The WebSocket opening handshake as a proxy sees it (RFC 6455 §4): which requests ask for it,
 * whether a client's request is a valid one (§4.2.1), the request the upstream gets (§4.1, the
 * hop-by-hop rules of RFC 9110 §7.6.1 with `Upgrade`/`Connection` made again for this hop), and
 * whether the upstream's `101` really accepted it (§4.1, the `Sec-WebSocket-Accept` check).
 *
 * @module
 */
import { FALLBACK_HEADER } from "./fallback.ts";
import { type HeaderPairs, HOP_BY_HOP_HEADERS, VIA_TOKEN } from "./headers.ts";

/** The GUID of RFC 6455 §1.3, appended to the key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** A head as bytes, one byte per character (field values are latin-1 on the wire). */
function latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** True when `list` (a comma-separated header value) has `token`, case-insensitively. */
function hasToken(list: string | null, token: string): boolean {
  if (list === null) return false;
  for (const item of list.split(",")) {
    if (item.trim().toLowerCase() === token) return true;
  }
  return false;
}

/**
 * The request asks to switch to WebSocket: `Upgrade` names `websocket` and `Connection` names
 * `upgrade` (an `Upgrade` the `Connection` header does not list is not meant for this hop,
 * RFC 9110 §7.8, and is dropped as hop-by-hop like any other).
 */
export function wantsWebSocket(headers: Headers): boolean {
  return hasToken(headers.get("upgrade"), "websocket") &&
    hasToken(headers.get("connection"), "upgrade");
}

/**
 * Why a request that asks for WebSocket is not a valid opening handshake (RFC 6455 §4.2.1),
 * or null: the method must be `GET`, `Sec-WebSocket-Version` 13, `Sec-WebSocket-Key` the base64
 * of 16 bytes, and there must be no body (the bytes after the head belong to the WebSocket).
 */
export function handshakeProblem(method: string, headers: Headers): string | null {
  if (method !== "GET") return `a WebSocket handshake must be GET, not ${method}`;
  if (headers.get("sec-websocket-version")?.trim() !== "13") {
    return "Sec-WebSocket-Version must be 13";
  }
  const key = headers.get("sec-websocket-key")?.trim() ?? "";
  if (!isNonceKey(key)) return "Sec-WebSocket-Key must be the base64 of 16 bytes";
  const length = headers.get("content-length");
  if (headers.has("transfer-encoding") || (length !== null && length.trim() !== "0")) {
    return "a WebSocket handshake has no body";
  }
  return null;
}

/** The base64 encoding of 16 bytes: 22 base64 characters and `==` (RFC 4648 §4). */
function isNonceKey(key: string): boolean {
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) return false;
  try {
    return atob(key).length === 16;
  } catch {
    return false;
  }
}

/** The `Sec-WebSocket-Accept` value for `key` (RFC 6455 §4.2.2 item 5.4). */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key.trim() + ACCEPT_GUID),
  );
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/**
 * The upgrade request for the upstream: `GET`, the target, `Host` of the upstream, the
 * client's end-to-end headers as rewritten for any request (`Sec-WebSocket-*`, the
 * forwarding headers, the request id) and `Upgrade`/`Connection` made again for this hop.
 */
export function upstreamHandshake(
  pathAndQuery: string,
  authority: string,
  headers: HeaderPairs,
): Uint8Array {
  let head = `GET ${pathAndQuery} HTTP/1.1\r\nhost: ${authority}\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  head += "upgrade: websocket\r\nconnection: Upgrade\r\n\r\n";
  return latin1(head);
}

/**
 * Why an upstream's `101` does not accept this handshake, or null: it must switch to
 * `websocket`, say `Connection: upgrade`, and prove it read the key (`Sec-WebSocket-Accept`).
 */
export function switchProblem(headers: HeaderPairs, expectedAccept: string): string | null {
  const get = (name: string) => {
    const values = headers.filter(([key]) => key.toLowerCase() === name).map(([, v]) => v);
    return values.length === 0 ? null : values.join(", ");
  };
  if (!hasToken(get("upgrade"), "websocket")) return "the upstream's 101 is not to websocket";
  if (!hasToken(get("connection"), "upgrade")) {
    return "the upstream's 101 lacks Connection: upgrade";
  }
  if (get("sec-websocket-accept")?.trim() !== expectedAccept) {
    return "the upstream's Sec-WebSocket-Accept does not match the key";
  }
  return null;
}

/**
 * The `101` head the client gets: the upstream's fields minus hop-by-hop ones (and those its
 * `Connection` names), `Upgrade`/`Connection` for the client's hop, `Via` and the request id,
 * and `x-breakwater-fallback` when a fallback service took the request (as on every answer
 * that took a fallback: README, "Fallback while open").
 */
export function clientSwitchHead(
  headers: HeaderPairs,
  requestId: string,
  fallback: string | null = null,
): Uint8Array {
  const named = new Set(HOP_BY_HOP_HEADERS);
  for (const [name, value] of headers) {
    if (name.toLowerCase() !== "connection") continue;
    for (const token of value.split(",")) named.add(token.trim().toLowerCase());
  }
  let via: string | null = null;
  let head = "HTTP/1.1 101 Switching Protocols\r\n";
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (named.has(lower) || lower === "x-request-id" || lower === "content-length") continue;
    if (fallback !== null && lower === FALLBACK_HEADER) continue;
    if (lower === "via") {
      via = via === null ? value : `${via}, ${value}`;
      continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  head += "upgrade: websocket\r\nconnection: Upgrade\r\n";
  head += `via: ${via === null ? VIA_TOKEN : `${via}, ${VIA_TOKEN}`}\r\n`;
  if (fallback !== null) head += `${FALLBACK_HEADER}: ${fallback}\r\n`;
  head += `x-request-id: ${requestId}\r\n\r\n`;
  return latin1(head);
}
