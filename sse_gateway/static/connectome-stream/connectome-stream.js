// connectome-stream: a Server-Sent Events client that never gives up, and one stream per browser.
//
// The stream is read with fetch (so the client sees status codes, Retry-After, and can send
// Last-Event-ID), parsed as the HTML standard's "event stream interpretation" says, and
// reconnected with jittered backoff after anything. The tabs of one origin that open the
// same URL share one connection: a Web Lock elects the tab that holds it, a BroadcastChannel
// carries its events to the others, and another tab takes over when the holder goes.
// No dependency, no build step. README.md documents the API; connectome-stream.d.ts types it.

const BEAT_MS = 500; // the holder tells the other tabs it is alive this often
const HOLDER_QUIET_MS = 1000; // silence after which a tab asks whether the holder is still there
const ANSWER_MS = 400; // ... and how long it waits for an answer before taking the stream
const RESET_AFTER_MS = 10000; // a stream live this long starts the backoff afresh
const MAX_RETRY_AFTER_MS = 600000; // a Retry-After above ten minutes is taken as ten
const SEEN_IDS = 2048; // event ids remembered to drop the copies a handover may bring
const WATCH_MS = 250; // how often the follower and the silence watchdog look
const GATEWAY_EVENTS = new Set(["ping", "probe", "resync"]); // never a "latest" one

/**
 * The HTML standard's event stream parser. Feed it bytes (or text) as they arrive; it
 * calls `onEvent({type, data, id, lastEventId})` at each blank line that ends an event
 * with data. `id` is the id this event carried ("" if none); `lastEventId` is the stream's
 * last event id after it, which persists across events (and, for the client, across
 * reconnections). `retry` holds the last valid `retry:` value (ms), or null.
 */
export class EventStreamParser {
  /**
   * @param {(event: RawEvent) => void} onEvent
   * @param {string} [lastEventId] where a reconnection starts from
   */
  constructor(onEvent, lastEventId = "") {
    this.onEvent = onEvent;
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId; // set by `id:`, copied to lastEventId at the end of a block
    /** @type {number | null} */
    this.retry = null;
    this.decoder = new TextDecoder("utf-8", { ignoreBOM: true }); // the BOM is ours to drop
    this.started = false;
    this.pending = ""; // an unfinished line
    this.afterCR = false; // the last chunk ended in CR: a LF opening the next one ends nothing
    this.type = "";
    this.data = "";
    this.hasData = false;
    this.ownId = "";
  }

  /** @param {Uint8Array | string} chunk */
  feed(chunk) {
    let text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!this.started && text) {
      this.started = true;
      if (text[0] === "\uFEFF") text = text.slice(1);
    }
    if (this.afterCR && text) {
      if (text[0] === "\n") text = text.slice(1);
      this.afterCR = false;
    }
    const buffer = this.pending + text;
    const breaks = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = breaks.exec(buffer)) !== null) {
      if (match[0] === "\r" && match.index === buffer.length - 1) this.afterCR = true;
      this.line(buffer.slice(start, match.index));
      start = breaks.lastIndex;
    }
    this.pending = buffer.slice(start);
  }

  /** @param {string} line */
  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return; // a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") {
      this.data += value + "\n";
      this.hasData = true;
    } else if (field === "id") {
      if (!value.includes("\0")) this.idBuffer = this.ownId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = parseInt(value, 10);
    }
  }

  dispatch() {
    this.lastEventId = this.idBuffer;
    const event = {
      type: this.type || "message",
      data: this.data.slice(0, -1),
      id: this.ownId,
      lastEventId: this.lastEventId,
    };
    const dispatch = this.hasData;
    this.type = this.data = this.ownId = "";
    this.hasData = false;
    if (dispatch) this.onEvent(event);
  }
}

/**
 * Full jitter: a uniform draw in [0, min(cap, base * 2^attempt)) milliseconds.
 * @param {number} attempt failures in a row, from 0
 * @param {number} [base] ms
 * @param {number} [cap] ms
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, base = 1000, cap = 30000, random = Math.random) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/**
 * A Retry-After header in milliseconds (delay-seconds or an HTTP date), or null.
 * @param {string | null | undefined} value
 * @param {number} [now] ms since the epoch
 */
export function retryAfterMs(value, now = Date.now()) {
  if (value == null) return null;
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) return Math.min(MAX_RETRY_AFTER_MS, parseInt(text, 10) * 1000);
  const at = /^[A-Za-z]/.test(text) ? Date.parse(text) : NaN; // "Wed, 21 Oct 2015 07:28:00 GMT"
  return Number.isNaN(at) ? null : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, at - now));
}

/** An event as handlers get it. */
class StreamEvent {
  /** @param {RawEvent} raw */
  constructor(raw) {
    this.type = raw.type;
    this.data = raw.data;
    this.id = raw.id;
    this.lastEventId = raw.lastEventId;
  }

  json() {
    return JSON.parse(this.data);
  }
}

/** Shows an error as uncaught (the console, window.onerror) without stopping the caller. */
function report(error) {
  if (globalThis.reportError) globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}
const now = () => Date.now();
const token = () => Math.random().toString(36).slice(2) + now().toString(36);

/**
 * @typedef {{type: string, data: string, id: string, lastEventId: string}} RawEvent
 * @typedef {"connecting" | "live" | "stale" | "reconnecting" | "closed"} StreamState
 * @typedef {{during: "ticket" | "stream", status: number, message: string, retryIn: number}} StreamError
 * @typedef {{
 *   events?: string[], getTicket?: () => Promise<string> | string, share?: boolean,
 *   pingInterval?: number, retryBase?: number, retryCap?: number,
 *   credentials?: RequestCredentials, fetch?: typeof fetch,
 * }} StreamOptions
 */

export class ConnectomeStream {
  /**
   * @param {string | URL} url the stream, e.g. "/api/sse"
   * @param {StreamOptions} [options]
   */
  constructor(url, options = {}) {
    const base = globalThis.location ? globalThis.location.href : undefined;
    this.url = new URL(url, base);
    if (options.events?.length) this.url.searchParams.set("events", [...options.events].sort().join(","));
    this.options = options;
    this.key = "connectome-stream " + this.url.href;
    const events = options.events;
    this.watchesHealth = !events || events.includes("connectome_health");
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {StreamState} */
    this.state = "connecting";
    this.reason = "";
    /** "holder" (this tab holds the shared stream), "follower", or "solo" (not shared). */
    this.role = "solo";
    this.lastEventId = "";
    this.closed = false;
    this.seen = new Map(); // event id -> the connection that brought it
    this.latest = new Map(); // type -> {event, conn}: what a tab that joins starts from
    this.runId = 0;
    this.gen = 0;
    this.tab = token();
    /** @type {number | null} */
    this.serverRetry = null;
    this.learnedPing = null;
    this.timers = new Set();
    queueMicrotask(() => this.start()); // handlers added right after construction see it all
  }

  /**
   * Listen for events of `type` (any event type the stream carries), or for the client's
   * own "state" and "error". Returns a function that removes the listener.
   * @param {string} type
   * @param {Function} fn
   */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  /** Stop for good: the connection (or this tab's share of it) ends, state "closed". */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.runId++;
    this.conn?.abort();
    this.wake?.();
    for (const timer of this.timers) clearInterval(timer);
    this.lockAbort?.abort();
    this.release?.();
    this.channel?.close();
    if (this.onOnline) globalThis.removeEventListener?.("online", this.onOnline);
    this.setState("closed", "");
  }

  // -- roles: one tab holds the stream, the others follow it ---------------------------

  start() {
    if (this.closed) return;
    this.emit("state", this.state, { reason: "" });
    this.onOnline = () => this.wake?.(); // the network is back: no need to wait out a backoff
    globalThis.addEventListener?.("online", this.onOnline);
    const locks = globalThis.navigator?.locks;
    if (this.options.share === false || !locks || typeof BroadcastChannel !== "function") {
      return this.run();
    }
    this.channel = new BroadcastChannel(this.key);
    this.channel.onmessage = (message) => this.hear(message.data);
    this.follow();
    this.post({ k: "hello" });
    this.every(WATCH_MS, () => this.watchHolder());
    this.queue(false);
  }

  /** Wait for the lock (or take it from a holder that stopped answering). */
  queue(steal) {
    const gen = ++this.gen;
    this.lockAbort?.abort();
    this.lockAbort = steal ? null : new AbortController();
    const options = steal ? { steal: true } : { signal: this.lockAbort.signal };
    globalThis.navigator.locks.request(this.key, options, () => this.hold(gen)).catch(() => {
      if (gen !== this.gen || this.closed) return; // a wait we gave up ourselves
      if (this.role === "holder") {
        this.stopHolding(); // stolen: another tab thought this one frozen
        this.follow();
        this.queue(false);
      } else {
        this.channel.close(); // locks refused (an opaque origin): a stream of our own
        this.channel = null;
        this.role = "solo";
        this.run();
      }
    });
  }

  hold(gen) {
    if (gen !== this.gen || this.closed) return undefined; // released at once
    return new Promise((resolve) => {
      this.release = resolve;
      this.role = "holder";
      this.beat();
      this.beatTimer = this.every(BEAT_MS, () => this.beat());
      this.run();
    });
  }

  stopHolding() {
    this.runId++;
    this.conn?.abort();
    this.wake?.();
    clearInterval(this.beatTimer);
    this.timers.delete(this.beatTimer);
    this.release?.();
    this.release = null;
  }

  follow() {
    this.role = "follower";
    this.heard = now();
    this.probedAt = 0;
  }

  watchHolder() {
    if (this.role !== "follower") return;
    const t = now();
    if (t - this.heard < HOLDER_QUIET_MS) {
      this.probedAt = 0;
    } else if (!this.probedAt) {
      // A live holder answers at once, even from a background tab whose timers are slowed.
      // The random part: tabs that suspect together do not all steal together.
      this.probedAt = t;
      this.stealAt = t + ANSWER_MS + Math.random() * ANSWER_MS;
      this.post({ k: "probe" });
    } else if (t > this.stealAt) {
      this.follow(); // and give the new holder a whole window to speak
      this.queue(true);
    }
  }

  hear(m) {
    if (!m || this.closed) return;
    const holding = this.role === "holder";
    if (m.k === "hello" && holding) {
      this.post({ k: "welcome", to: m.from, latest: [...this.latest.values()], ...this.status() });
    } else if (m.k === "probe" && holding) {
      this.beat();
    } else if (this.role === "follower" && m.k !== "hello" && m.k !== "probe") {
      if (m.k === "welcome" && m.to !== this.tab) return;
      this.heard = now();
      if (m.k === "event") this.deliver(m.event, m.conn, false);
      if (m.k === "welcome") for (const { event, conn } of m.latest) this.deliver(event, conn, true);
      if (m.k === "error") this.emit("error", m.error);
      if (m.lastEventId !== undefined) this.lastEventId = m.lastEventId;
      if (m.state && m.state !== "closed") this.setState(m.state, m.reason);
    }
  }

  status() {
    return { state: this.state, reason: this.reason, lastEventId: this.lastEventId };
  }

  beat() {
    this.post({ k: "beat", ...this.status() });
  }

  post(message) {
    try {
      this.channel?.postMessage({ ...message, from: this.tab });
    } catch (error) {
      report(error);
    }
  }

  // -- the connection ------------------------------------------------------------------

  async run() {
    const run = ++this.runId;
    const current = () => run === this.runId && !this.closed;
    let attempt = 0;
    while (current()) {
      if (this.state !== "connecting") this.setState("reconnecting", ""); // a takeover
      let wait;
      try {
        const result = await this.connect(current);
        if (!current()) break;
        if (result.liveMs >= RESET_AFTER_MS) attempt = 0;
        const after = result.status === 429 || result.status === 503 ? result.retryAfter : null;
        // Retry-After, plus a share of one backoff step so a refused crowd comes back spread.
        wait = after != null ? after + this.backoff(0) : this.backoff(attempt++);
        if (!result.ok) this.fail("stream", result.status, result.message, wait);
      } catch (error) {
        if (!current()) break;
        wait = this.backoff(attempt++);
        const status = typeof error?.status === "number" ? error.status : 0;
        this.fail(error?.during ?? "stream", status, String(error?.message ?? error), wait);
      }
      if (!current()) break;
      this.setState("reconnecting", "");
      await this.sleep(wait);
    }
  }

  backoff(attempt) {
    const base = this.options.retryBase ?? this.serverRetry ?? 1000;
    return backoffDelay(attempt, base, this.options.retryCap ?? 30000);
  }

  fail(during, status, message, retryIn) {
    const error = { during, status, message, retryIn: Math.round(retryIn) };
    this.emit("error", error);
    if (this.role === "holder") this.post({ k: "error", error });
  }

  /** One connection, to its end: {ok, status, retryAfter, message, liveMs}. */
  async connect(current) {
    const url = new URL(this.url);
    if (this.options.getTicket) {
      let ticket;
      try {
        ticket = await this.options.getTicket();
      } catch (error) {
        throw Object.assign(error instanceof Error ? error : new Error(String(error)), { during: "ticket" });
      }
      if (!current()) return { ok: false, status: 0, liveMs: 0 };
      if (ticket) url.searchParams.set("ticket", ticket);
    }
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    const abort = (this.conn = new AbortController());
    // One watchdog for the whole connection: no answer, or no ping, for two ping intervals
    // (a proxy holding the stream, or a connection that died without a word).
    const watch = { last: now(), silent: false };
    const watchdog = this.every(WATCH_MS, () => {
      if (now() - watch.last <= this.staleAfter()) return;
      watch.silent = true;
      this.setState("stale", "silent");
      abort.abort();
    });
    try {
      let response;
      try {
        response = await (this.options.fetch ?? fetch)(url, {
          headers,
          signal: abort.signal,
          cache: "no-store",
          credentials: this.options.credentials ?? "same-origin",
        });
      } catch (error) {
        throw watch.silent ? new Error(`no answer in ${this.staleAfter() / 1000} s`) : error;
      }
      const status = response.status;
      const type = response.headers.get("content-type") ?? "";
      if (status === 200 && type.startsWith("text/event-stream") && response.body) {
        return await this.read(response.body, current, watch);
      }
      let message = status === 200 ? `not an event stream (${type})` : `${status} ${response.statusText}`;
      if (status !== 200) {
        try {
          message = JSON.parse(await response.text()).error ?? message;
        } catch {} // not JSON: the status line says enough
      }
      const retryAfter = retryAfterMs(response.headers.get("retry-after"));
      return { ok: false, status, retryAfter, message: message.trim(), liveMs: 0 };
    } finally {
      clearInterval(watchdog);
      this.timers.delete(watchdog);
      abort.abort();
    }
  }

  /** The live stream, read to its end (or until the watchdog aborts it). */
  async read(body, current, watch) {
    const opened = (watch.last = now());
    const conn = token(); // tells this connection's events from another's copies
    let pingTs = null;
    let pingGap = Infinity;
    this.setState("live", "");
    const parser = new EventStreamParser((event) => {
      if (!current()) return;
      if (event.type === "ping") {
        watch.last = now();
        const ts = safeJson(event.data)?.ts;
        if (typeof ts === "number" && pingTs !== null && ts - pingTs > 0.05) {
          pingGap = Math.min(pingGap, ts - pingTs); // the gateway's own clock: bunching cannot fool it
          this.learnedPing = pingGap;
        }
        if (typeof ts === "number") pingTs = ts;
      }
      this.fromStream(event, conn);
    }, this.lastEventId);
    try {
      const reader = body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || !current()) break;
        parser.feed(value);
        if (parser.retry !== null) this.serverRetry = parser.retry;
      }
    } catch {
      // the connection broke or was aborted: either way, the stream ended
    }
    return { ok: true, status: 200, liveMs: now() - opened };
  }

  staleAfter() {
    const interval = this.options.pingInterval ?? this.learnedPing ?? 15;
    return Math.max(2000, 2 * interval * 1000);
  }

  fromStream(event, conn) {
    if (!this.deliver(event, conn, false)) return;
    this.post({ k: "event", event, conn, lastEventId: this.lastEventId });
    if (event.type === "health_stale" && this.watchesHealth && this.state === "live") {
      this.setState("stale", "health_stale");
    } else if (event.type === "connectome_health" && this.reason === "health_stale") {
      this.setState("live", "");
    }
  }

  /** Hand an event to the handlers unless it is a copy; true when handed. */
  deliver(raw, conn, replay) {
    if (raw.type === "resync") {
      this.seen.clear(); // the app drops what it holds: the snapshots that follow all count
      this.latest.clear();
    } else if (raw.id) {
      const from = this.seen.get(raw.id);
      // The same id from the same connection is a new event (two identical payloads);
      // from another connection it is the overlap of a reconnection or a handover.
      if (from !== undefined && (replay || from !== conn)) return false;
      this.seen.set(raw.id, conn);
      if (this.seen.size > SEEN_IDS) this.seen.delete(this.seen.keys().next().value);
    }
    this.lastEventId = raw.lastEventId;
    if (!GATEWAY_EVENTS.has(raw.type)) this.latest.set(raw.type, { event: raw, conn });
    if (raw.type === "connectome_health") this.latest.delete("health_stale");
    this.emit(raw.type, new StreamEvent(raw));
    return true;
  }

  // -- small things --------------------------------------------------------------------

  setState(state, reason) {
    if (state === this.state && reason === this.reason) return;
    this.state = state;
    this.reason = reason;
    this.emit("state", state, { reason });
    if (this.role === "holder") this.beat();
  }

  emit(type, ...args) {
    for (const fn of [...(this.handlers.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (error) {
        report(error); // a failing handler is the app's bug: shown, and the stream goes on
      }
    }
  }

  every(ms, fn) {
    const timer = setInterval(fn, ms);
    this.timers.add(timer);
    return timer;
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
