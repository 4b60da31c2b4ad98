// The connection loop against a small HTTP server of the test's own (Node: no Web Locks,
// so each ConnectomeStream holds its own connection, as in a browser without them).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { ConnectomeStream } from "../../sse_gateway/static/connectome-stream/connectome-stream.js";

/** A server answering each GET with `answers[n]` (the last one repeats); records requests. */
async function serve(answers) {
  const requests = [];
  const server = createServer((req, res) => {
    const n = requests.length;
    requests.push({ url: req.url, headers: req.headers, at: Date.now() });
    answers[Math.min(n, answers.length - 1)](res);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}/api/sse`;
  const close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  return { url, requests, close };
}

const stream = (body, { end = true } = {}) => (res) => {
  res.writeHead(200, { "Content-Type": "text/event-stream; charset=utf-8" });
  res.write(body);
  if (end) res.end();
};
const refuse = (status, headers = {}) => (res) => {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify({ error: `refused ${status}`, status }));
};

function until(predicate, what, timeout = 5000) {
  const deadline = Date.now() + timeout;
  return new Promise((resolve, reject) => {
    const look = () => {
      if (predicate()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(look, 10);
    };
    look();
  });
}

function record(s) {
  const log = { states: [], events: [], errors: [] };
  s.on("state", (state, info) => log.states.push(`${state}${info.reason ? ":" + info.reason : ""}`));
  s.on("error", (error) => log.errors.push(error));
  for (const type of ["note", "resync", "health_stale", "connectome_health"]) {
    s.on(type, (e) => log.events.push(`${e.type}:${e.data}`));
  }
  return log;
}

test("resumes with Last-Event-ID after the stream ends, and goes live again", async () => {
  const server = await serve([stream("retry: 50\n\nid: a1\nevent: note\ndata: one\n\n"), stream("id: a2\nevent: note\ndata: two\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => log.events.length === 2, "two events");
    assert.deepEqual(log.events, ["note:one", "note:two"]);
    assert.equal(server.requests[0].headers["last-event-id"], undefined);
    assert.equal(server.requests[1].headers["last-event-id"], "a1");
    assert.equal(server.requests[1].headers.accept, "text/event-stream");
    assert.deepEqual(log.states, ["connecting", "live", "reconnecting", "live"]);
    assert.equal(s.lastEventId, "a2");
  } finally {
    s.close();
    await server.close();
  }
  assert.equal(s.state, "closed");
});

test("429 with Retry-After waits at least that long, and reports it", async () => {
  const server = await serve([refuse(429, { "Retry-After": "1" }), stream("event: note\ndata: in\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => s.state === "live", "live", 5000);
    const gap = server.requests[1].at - server.requests[0].at;
    assert.ok(gap >= 1000, `retried after ${gap} ms`);
    assert.equal(log.errors[0].status, 429);
    assert.equal(log.errors[0].message, "refused 429");
    assert.ok(log.errors[0].retryIn >= 1000);
    assert.deepEqual(log.states, ["connecting", "reconnecting", "live"]);
  } finally {
    s.close();
    await server.close();
  }
});

test("401: a fresh ticket from getTicket before each attempt", async () => {
  const server = await serve([refuse(401), stream("event: note\ndata: in\n\n", { end: false })]);
  let tickets = 0;
  const s = new ConnectomeStream(server.url, { retryBase: 50, getTicket: async () => `t${++tickets}` });
  const log = record(s);
  try {
    await until(() => log.events.length === 1, "the event");
    assert.deepEqual(server.requests.map((r) => new URL(r.url, "http://x").searchParams.get("ticket")), ["t1", "t2"]);
    assert.deepEqual([log.errors[0].during, log.errors[0].status], ["stream", 401]);
  } finally {
    s.close();
    await server.close();
  }
});

test("a getTicket that throws is reported and retried", async () => {
  const server = await serve([stream("event: note\ndata: in\n\n", { end: false })]);
  let calls = 0;
  const getTicket = async () => {
    if (++calls === 1) throw Object.assign(new Error("token expired"), { status: 401 });
    return "good";
  };
  const s = new ConnectomeStream(server.url, { retryBase: 50, getTicket });
  const log = record(s);
  try {
    await until(() => log.events.length === 1, "the event");
    assert.deepEqual(log.errors.map((e) => [e.during, e.status, e.message]), [["ticket", 401, "token expired"]]);
    assert.equal(server.requests.length, 1);
  } finally {
    s.close();
    await server.close();
  }
});

test("no ping for two ping intervals: stale, then the stream is reopened", async () => {
  const server = await serve([stream("event: ping\ndata: {}\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50, pingInterval: 1 });
  const log = record(s);
  try {
    await until(() => server.requests.length >= 2, "a second request", 6000);
    assert.deepEqual(log.states.slice(0, 4), ["connecting", "live", "stale:silent", "reconnecting"]);
  } finally {
    s.close();
    await server.close();
  }
});

test("pings keep it live; the interval is learnt from their timestamps", async () => {
  let timer;
  const server = await serve([(res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    let ts = 1000;
    timer = setInterval(() => res.write(`event: ping\ndata: {"ts": ${(ts += 0.3)}}\n\n`), 300);
  }]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  record(s);
  try {
    await until(() => s.learnedPing !== null, "a learnt interval");
    assert.ok(Math.abs(s.learnedPing - 0.3) < 0.01, `learnt ${s.learnedPing}`);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(s.state, "live");
    assert.equal(server.requests.length, 1);
  } finally {
    clearInterval(timer);
    s.close();
    await server.close();
  }
});

test("health_stale makes it stale until the next connectome_health", async () => {
  let res;
  const server = await serve([(r) => { res = r; stream("", { end: false })(r); }]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => s.state === "live", "live");
    res.write('event: health_stale\ndata: {"age": 12}\n\n');
    await until(() => s.state === "stale", "stale");
    res.write("id: h1\nevent: connectome_health\ndata: {}\n\n");
    await until(() => s.state === "live", "live again");
    assert.deepEqual(log.states, ["connecting", "live", "stale:health_stale", "live"]);
  } finally {
    s.close();
    await server.close();
  }
});

test("a stream that selects other events ignores health_stale", async () => {
  const server = await serve([stream('event: health_stale\ndata: {"age": 12}\n\n', { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50, events: ["note", "deploy"] });
  const log = record(s);
  try {
    await until(() => log.events.length === 1, "health_stale");
    assert.equal(s.state, "live");
    assert.equal(new URL(server.requests[0].url, "http://x").searchParams.get("events"), "deploy,note");
  } finally {
    s.close();
    await server.close();
  }
});

test("a copy from another connection is dropped; after resync it counts again", async () => {
  const server = await serve([
    stream("id: x1\nevent: note\ndata: one\n\n"),
    stream("id: x1\nevent: note\ndata: one\n\nid: x2\nevent: note\ndata: two\n\n"),
    stream("event: resync\ndata: {}\n\nid: x2\nevent: note\ndata: two\n\n", { end: false }),
  ]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => log.events.length === 4, "four events");
    assert.deepEqual(log.events, ["note:one", "note:two", "resync:{}", "note:two"]);
  } finally {
    s.close();
    await server.close();
  }
});

test("the same id twice on one connection is two events (identical payloads)", async () => {
  const server = await serve([stream("id: y\nevent: note\ndata: same\n\nid: y\nevent: note\ndata: same\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => log.events.length === 2, "both");
  } finally {
    s.close();
    await server.close();
  }
});

test("a 200 that is not an event stream is an error, retried", async () => {
  const server = await serve([(res) => { res.writeHead(200, { "Content-Type": "text/html" }); res.end("<p>hi"); }, stream("event: note\ndata: in\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  const log = record(s);
  try {
    await until(() => log.events.length === 1, "the event");
    assert.match(log.errors[0].message, /not an event stream/);
  } finally {
    s.close();
    await server.close();
  }
});

test("an unreachable server is retried with backoff, never given up", async () => {
  const server = await serve([stream("", { end: false })]);
  const url = server.url;
  await server.close();
  const s = new ConnectomeStream(url, { retryBase: 20, retryCap: 100 });
  const log = record(s);
  try {
    await until(() => log.errors.length >= 5, "five failed attempts");
    assert.ok(log.errors.every((e) => e.status === 0 && e.retryIn <= 100));
    assert.equal(s.state, "reconnecting");
  } finally {
    s.close();
  }
});

test("close() stops everything: no request after it", async () => {
  const server = await serve([stream("event: note\ndata: in\n\n")]);
  const s = new ConnectomeStream(server.url, { retryBase: 200 });
  const log = record(s);
  try {
    await until(() => log.events.length >= 1, "the event");
    s.close();
    const made = server.requests.length;
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(server.requests.length, made);
    assert.equal(log.states.at(-1), "closed");
  } finally {
    await server.close();
  }
});

test("a handler that throws does not stop the others or the stream", async () => {
  const server = await serve([stream("event: note\ndata: a\n\nevent: note\ndata: b\n\n", { end: false })]);
  const reported = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (error) => reported.push(error);
  const s = new ConnectomeStream(server.url, { retryBase: 50 });
  s.on("note", () => { throw new Error("app bug"); });
  const log = record(s);
  try {
    await until(() => log.events.length === 2, "both events");
    assert.equal(reported.length, 2);
  } finally {
    globalThis.reportError = saved;
    s.close();
    await server.close();
  }
});

test("a server that never answers is given up after two ping intervals, and tried again", async () => {
  const server = await serve([() => {}, stream("event: note\ndata: in\n\n", { end: false })]);
  const s = new ConnectomeStream(server.url, { retryBase: 50, pingInterval: 1 });
  const log = record(s);
  try {
    await until(() => log.events.length === 1, "the event from the second request", 6000);
    assert.match(log.errors[0].message, /no answer in 2 s/);
    assert.deepEqual(log.states, ["connecting", "stale:silent", "reconnecting", "live"]);
  } finally {
    s.close();
    await server.close();
  }
});
