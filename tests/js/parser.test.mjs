// The event stream parser against the HTML standard's "event stream interpretation".
import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStreamParser } from "../../sse_gateway/static/connectome-stream/connectome-stream.js";

/** Feed `chunks` (strings or bytes) to a fresh parser; return [events, parser]. */
function parse(chunks, lastEventId = "") {
  const events = [];
  const parser = new EventStreamParser((event) => events.push(event), lastEventId);
  for (const chunk of chunks) parser.feed(chunk);
  return [events, parser];
}

const bytes = (text) => new TextEncoder().encode(text);

const CASES = [
  ["one event", ["event: a\ndata: x\n\n"], [{ type: "a", data: "x", id: "", lastEventId: "" }]],
  ["the default type is message", ["data: x\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["data lines join with LF", ["data: a\ndata: b\ndata\n\n"], [{ type: "message", data: "a\nb\n", id: "", lastEventId: "" }]],
  ["an empty data line still dispatches", ["data\n\n"], [{ type: "message", data: "", id: "", lastEventId: "" }]],
  ["no data: nothing dispatched, the type is forgotten", ["event: a\n\ndata: x\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["CR line ends", ["event: a\rdata: x\r\r"], [{ type: "a", data: "x", id: "", lastEventId: "" }]],
  ["CRLF line ends", ["event: a\r\ndata: x\r\n\r\n"], [{ type: "a", data: "x", id: "", lastEventId: "" }]],
  ["mixed line ends", ["data: a\rdata: b\ndata: c\r\n\n"], [{ type: "message", data: "a\nb\nc", id: "", lastEventId: "" }]],
  ["only one space after the colon goes", ["data:  two\ndata:none\n\n"], [{ type: "message", data: " two\nnone", id: "", lastEventId: "" }]],
  ["comments are ignored", [": hello\ndata: x\n:\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["unknown fields are ignored", ["foo: bar\ndata: x\nDATA: y\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["a leading BOM goes", ["\uFEFFdata: x\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["only one leading BOM goes", ["\uFEFF\uFEFFdata: x\n\ndata: y\n\n"], [{ type: "message", data: "y", id: "", lastEventId: "" }]],
  ["a BOM later on is data", ["data: \uFEFFx\n\n"], [{ type: "message", data: "\uFEFFx", id: "", lastEventId: "" }]],
  ["an unfinished event at the end is not dispatched", ["data: x\n\ndata: y\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
  ["the id persists over events without one", ["id: 1\ndata: a\n\ndata: b\n\n"], [
    { type: "message", data: "a", id: "1", lastEventId: "1" },
    { type: "message", data: "b", id: "", lastEventId: "1" },
  ]],
  ["an empty id resets it", ["id: 1\ndata: a\n\nid\ndata: b\n\n"], [
    { type: "message", data: "a", id: "1", lastEventId: "1" },
    { type: "message", data: "b", id: "", lastEventId: "" },
  ]],
  ["an id with NUL is ignored", ["id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"], [
    { type: "message", data: "a", id: "1", lastEventId: "1" },
    { type: "message", data: "b", id: "", lastEventId: "1" },
  ]],
  ["an id in a block without data still counts", ["id: 7\n\ndata: b\n\n"], [{ type: "message", data: "b", id: "", lastEventId: "7" }]],
  ["a field without colon has an empty value", ["event\ndata: x\n\n"], [{ type: "message", data: "x", id: "", lastEventId: "" }]],
];

for (const [name, chunks, expected] of CASES) {
  test(`parser: ${name}`, () => {
    assert.deepEqual(parse(chunks)[0], expected);
    // The same bytes one at a time: no split may change the result.
    const text = chunks.join("");
    assert.deepEqual(parse([...bytes(text)].map((b) => Uint8Array.of(b)))[0], expected);
  });
}

test("parser: a CRLF split between chunks is one line end", () => {
  const [events] = parse(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
  assert.deepEqual(events.map((e) => e.data), ["a\nb"]);
});

test("parser: a CR at a chunk end, then LF LF, ends the event once", () => {
  const [events] = parse(["data: a\r", "\n", "\n", "data: b\n\n"]);
  assert.deepEqual(events.map((e) => e.data), ["a", "b"]);
});

test("parser: a multi-byte character split between chunks", () => {
  const all = bytes("data: é€😀\n\n");
  const [events] = parse([all.slice(0, 7), all.slice(7, 10), all.slice(10)]);
  assert.equal(events[0].data, "é€😀");
});

test("parser: invalid UTF-8 becomes U+FFFD", () => {
  const [events] = parse([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a, 0x0a)]);
  assert.equal(events[0].data, "\uFFFD");
});

test("parser: a BOM in bytes is dropped once", () => {
  const [events] = parse([Uint8Array.of(0xef, 0xbb), Uint8Array.of(0xbf), bytes("data: x\n\n")]);
  assert.equal(events[0].data, "x");
});

test("parser: retry takes ASCII digits only", () => {
  const [, parser] = parse(["retry: 2500\n"]);
  assert.equal(parser.retry, 2500);
  for (const bad of ["retry: 25x\n", "retry: -1\n", "retry: 1.5\n", "retry: \n", "retry:  10\n"]) {
    assert.equal(parse([bad])[1].retry, null, bad);
  }
  assert.equal(parse(["retry:10\nretry: x\n"])[1].retry, 10);
});

test("parser: a stream resumed from an id carries it until the server sets another", () => {
  const [events] = parse(["data: a\n\nid: 9\ndata: b\n\n"], "5");
  assert.deepEqual(events.map((e) => e.lastEventId), ["5", "9"]);
});

test("parser: the gateway's framing of a payload with line breaks comes back whole", () => {
  // The gateway sends a payload with CR, LF and CRLF as one data line per piece.
  const [events] = parse(["id: abc\nevent: note\ndata: one\ndata: two\ndata: three\n\n"]);
  assert.deepEqual(events, [{ type: "note", data: "one\ntwo\nthree", id: "abc", lastEventId: "abc" }]);
});
