/**
 * The request head parser on its own: the end of a head found however the bytes are split
 * across reads, and the `Host` grammar.
 */
import assert from "node:assert/strict";
import { isValidHost } from "../../src/routing/request_target.ts";
import {
  findHeadEnd,
  HEAD_BARE_LF,
  HEAD_INCOMPLETE,
  parseRequestHead,
  type RequestHead,
} from "../../src/server/_request_head.ts";

const encoder = new TextEncoder();

Deno.test("findHeadEnd finds the end wherever a read splits the head", () => {
  const text = "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nBODY";
  const bytes = encoder.encode(text);
  const end = text.indexOf("\r\n\r\n") + 4;
  for (let split = 1; split < end; split++) {
    // First read: bytes [0, split); the scan then resumes where it stopped, as the server does.
    assert.equal(findHeadEnd(bytes, 0, 0, split), HEAD_INCOMPLETE, `split at ${split}`);
    assert.equal(findHeadEnd(bytes, 0, split, bytes.length), end, `split at ${split}`);
  }
  // Byte by byte.
  let scanned = 0;
  let found = HEAD_INCOMPLETE;
  for (let length = 1; length <= bytes.length && found === HEAD_INCOMPLETE; length++) {
    found = findHeadEnd(bytes, 0, scanned, length);
    scanned = length;
  }
  assert.equal(found, end);
});

Deno.test("findHeadEnd refuses a bare LF, also right after a CRLF", () => {
  for (const text of ["GET / HTTP/1.1\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\n", "\n"]) {
    assert.equal(findHeadEnd(encoder.encode(text), 0, 0, text.length), HEAD_BARE_LF, text);
  }
});

Deno.test("parseRequestHead: framing fields and keep-alive", () => {
  const parse = (text: string) => {
    const bytes = encoder.encode(text);
    return parseRequestHead(bytes, 0, bytes.length) as RequestHead;
  };
  const head = parse(
    "POST /x?y HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\nConnection: Upgrade, Close\r\n" +
      "Expect: 100-Continue\r\n\r\n",
  );
  assert.equal(head.chunked, true);
  assert.equal(head.contentLength, -1);
  assert.equal(head.keepAlive, false);
  assert.equal(head.expectContinue, true);
  assert.deepEqual(head.fields[2], ["Connection", "Upgrade, Close"]);
  const old = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n");
  assert.equal(old.keepAlive, true);
  assert.equal(old.expectContinue, false, "ignored on HTTP/1.0");
  assert.equal(old.host, null);
  const length = parse("PUT / HTTP/1.1\r\nHost: h\r\ncontent-length: 007\r\n\r\n");
  assert.equal(length.contentLength, 7);
});

Deno.test("isValidHost: reg-name, IPv4, [IPv6], optional port up to 65535", () => {
  for (
    const host of [
      "example.com",
      "EXAMPLE.com:80",
      "a-b_c~d.e",
      "127.0.0.1:8080",
      "[::1]",
      "[2001:db8::1]:443",
      "[::ffff:192.0.2.1]",
      "h:0",
      "h:65535",
      "%41b",
      "a!$&'()*+,;=b",
      "",
    ]
  ) {
    assert.equal(isValidHost(host), true, host);
  }
  for (
    const host of [
      "x/api/orders#",
      "a b",
      "h:99999",
      "h:65536",
      "h:",
      "h:8a",
      "h:80:80",
      "u@h",
      "[::1",
      "[::1]x",
      "[::1::2]",
      "[v1.x]",
      "%4",
      "h?x",
      "h\\x",
    ]
  ) {
    assert.equal(isValidHost(host), false, host);
  }
});
