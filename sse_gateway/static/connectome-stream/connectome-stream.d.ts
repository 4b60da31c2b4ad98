// Types of connectome-stream.js (hand-written: the module itself is plain JavaScript).

/** Where the stream is: its connection, not the data it carries. */
export type StreamState = "connecting" | "live" | "stale" | "reconnecting" | "closed";

/** Why the state changed, when there is more to say. */
export interface StateInfo {
  /** "health_stale" (the gateway says no publisher speaks), "silent" (no ping for two
   *  ping intervals: the stream is reopened), or "". */
  reason: "" | "health_stale" | "silent";
}

/** One event of the stream, as handlers get it. */
export interface StreamEvent {
  /** The event type (`event:`), "message" when the server sent none. */
  readonly type: string;
  /** The data, lines joined with "\n". */
  readonly data: string;
  /** The id this event carried (`id:`), "" for events without one (ping, resync, ...). */
  readonly id: string;
  /** The stream's last event id after this event (what a reconnection resumes from). */
  readonly lastEventId: string;
  /** `JSON.parse(data)`; throws on data that is not JSON. */
  json<T = unknown>(): T;
}

/** A connection attempt that failed; the client retries by itself after `retryIn` ms. */
export interface StreamError {
  /** "ticket": getTicket() threw; "stream": the stream request failed or was refused. */
  during: "ticket" | "stream";
  /** The HTTP status (401, 403, 429, 503, ...), the thrown error's `status`, or 0 (network). */
  status: number;
  /** The gateway's JSON `error`, or what went wrong. */
  message: string;
  retryIn: number;
}

export interface StreamOptions {
  /** Event types to select (`?events=a,b`); default: all. */
  events?: string[];
  /** Returns a one-time ticket; called before every connection (`?ticket=`). A thrown
   *  error is reported as a StreamError with `during: "ticket"` and its `status`. */
  getTicket?: () => Promise<string> | string;
  /** Share one connection among the tabs of this origin (default true). */
  share?: boolean;
  /** Seconds between the gateway's pings; default: learnt from the pings, 15 until then. */
  pingInterval?: number;
  /** Backoff base in ms; default: the server's `retry:`, else 1000. */
  retryBase?: number;
  /** Backoff cap in ms (default 30000). */
  retryCap?: number;
  /** fetch's credentials mode (default "same-origin"). */
  credentials?: RequestCredentials;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

export class ConnectomeStream {
  constructor(url: string | URL, options?: StreamOptions);
  /** The URL requested (with `events` applied). */
  readonly url: URL;
  readonly state: StreamState;
  /** "holder": this tab holds the shared connection; "follower": another tab does;
   *  "solo": not shared (share: false, or Web Locks / BroadcastChannel missing). */
  readonly role: "holder" | "follower" | "solo";
  /** The last event id seen, by this tab or the holder. */
  readonly lastEventId: string;

  on(type: "state", fn: (state: StreamState, info: StateInfo) => void): () => void;
  on(type: "error", fn: (error: StreamError) => void): () => void;
  /** Any event type the stream carries, e.g. "connectome_health", "ping", "resync". */
  on(type: string, fn: (event: StreamEvent) => void): () => void;
  /** Stop for good (state "closed"). */
  close(): void;
}

/** The HTML standard's event stream parser (exported for tests and other transports). */
export class EventStreamParser {
  constructor(
    onEvent: (event: { type: string; data: string; id: string; lastEventId: string }) => void,
    lastEventId?: string,
  );
  lastEventId: string;
  /** The last valid `retry:` in ms, or null. */
  retry: number | null;
  feed(chunk: Uint8Array | string): void;
}

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)) ms. */
export function backoffDelay(
  attempt: number,
  base?: number,
  cap?: number,
  random?: () => number,
): number;

/** A Retry-After value (seconds or HTTP date) in ms, or null. */
export function retryAfterMs(value: string | null | undefined, now?: number): number | null;
