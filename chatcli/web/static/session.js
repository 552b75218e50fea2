// One user's session over a WebSocket, across reconnects (protocol v1.1 section 1).
//
// The page's counterpart of chatcli/client/resume.py: per room the epoch and the ids
// seen (so the next hello asks for exactly what was missed and nothing shows twice),
// the last ready.resume token, every say/me with a txn kept until its ack and sent
// again after a reconnect, and a reconnect schedule with exponential backoff and
// jitter. It decides nothing about the screen: the app gets frames and state changes
// through two callbacks.

/** First pause before reconnecting (seconds); doubles per failed attempt up to the cap. */
export const BACKOFF_FIRST = 0.5;
export const BACKOFF_CAP = 30;
/** A pause is drawn between (1 - jitter) and 1 times its nominal length. */
export const BACKOFF_JITTER = 0.5;
/** Seconds without a session after which the page stops trying (state "offline"). */
export const RETRY_FOR = 300;
/** Seconds a name_taken is retried after a reconnect that offered a token. */
export const NAME_TAKEN_RETRY_FOR = 120;
/** No frame at all for this long (the server pings every 15 s): the link is dead. */
export const SILENCE_LIMIT = 50;
/** Message ids remembered per room for de-duplication. */
const SEEN_PER_ROOM = 10000;

/** Refusals after which reconnecting is pointless or unwanted. */
export const FINAL_CODES = new Set([
  "kicked", "banned", "replaced", "name_invalid", "auth_failed", "frame_too_large",
]);
/** Refusals of a first login: the person must choose again (the login form). */
const LOGIN_CODES = new Set(["name_invalid", "name_taken", "auth_failed", "banned", "server_full"]);

/** The pause before reconnection `attempt` (1, 2, ...), in seconds. */
export function backoffDelay(attempt, random = Math.random) {
  const nominal = Math.min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (Math.max(attempt, 1) - 1));
  return nominal * (1 - BACKOFF_JITTER * random());
}

/** A fresh transaction id (1-64 characters, unique). */
export function newTxn() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

/** The WebSocket address of the server that served this page. */
export function socketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

export class Session {
  /**
   * @param {object} options
   * @param {string} options.url - the WebSocket address
   * @param {string} options.name
   * @param {string} [options.room]
   * @param {string} [options.password] - an account's password, when it has one
   * @param {(frame: object, info: object) => void} options.onFrame - every frame for the app
   * @param {(state: string, detail: object) => void} options.onState - connection state
   */
  constructor({ url, name, room, password, onFrame, onState, random = Math.random }) {
    this.url = url;
    this.name = name;
    this.room = room || null;
    this.password = password || null;
    this.onFrame = onFrame;
    this.onState = onState;
    this.random = random;
    this.ws = null;
    this.token = null;
    this.rooms = new Map(); // room -> {epoch, floor, ids:Set, last}
    this.inFlight = new Map(); // ref -> frame (say/me with txn), in the order typed
    this.refCounter = 0;
    this.attempt = 0;
    this.lostAt = null;
    this.loggedIn = false; // logged in at least once: later logins are reconnects
    this.ready = false; // logged in on the current connection
    this.offeredToken = false;
    this.stopped = false;
    this.final = null;
    this.retryTimer = null;
    this.tickTimer = null;
    this.silenceTimer = null;
    this.features = [];
  }

  /** Open the first connection. */
  start() {
    this.connect();
  }

  /** A ref of our own, to match answers to what we sent. */
  nextRef(prefix = "c") {
    this.refCounter += 1;
    return `${prefix}-${this.refCounter}`;
  }

  /** Send a frame now if logged in; false when it could not be sent. */
  send(frame) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Say something (or /me it): kept with its txn until acknowledged, sent again after a
   * reconnect, so it is stored exactly once whatever happens to the link.
   */
  say(text, action = false) {
    const ref = this.nextRef("m");
    const frame = { type: action ? "me" : "say", text, ref, txn: newTxn() };
    this.inFlight.set(ref, frame);
    this.send(frame);
    return ref;
  }

  /** Leave for good: bye, close, no reconnect. */
  quit() {
    this.send({ type: "bye" });
    this.stop("you left");
  }

  stop(reason) {
    this.stopped = true;
    this.final = reason;
    this.clearTimers();
    if (this.ws) this.ws.close();
    this.setState("offline", { reason });
  }

  // -- the connection ---------------------------------------------------------------

  connect() {
    this.clearTimers();
    this.ready = false;
    this.setState(this.loggedIn ? "reconnecting" : "connecting", { seconds: 0 });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.lost(String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.heard();
      ws.send(JSON.stringify(this.hello()));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws || this.stopped) return;
      this.heard();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // the server sends JSON only; a broken frame is not worth dying for
      }
      if (frame && typeof frame === "object" && typeof frame.type === "string") {
        this.receive(frame);
      }
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.lost("connection closed");
    };
  }

  hello() {
    const frame = { type: "hello", name: this.name };
    if (this.room) frame.room = this.room;
    const room = this.room ? this.rooms.get(this.room) : undefined;
    if (this.loggedIn && room) {
      frame.since = room.last ?? 0;
      if (room.epoch) frame.epoch = room.epoch;
    }
    if (this.token) frame.resume = this.token;
    this.offeredToken = Boolean(this.token);
    if (this.password) frame.password = this.password;
    return frame;
  }

  receive(frame) {
    switch (frame.type) {
      case "ping":
        this.ws?.send(JSON.stringify({ type: "pong" }));
        return;
      case "pong":
        return;
      case "welcome":
        this.features = Array.isArray(frame.features) ? frame.features : [];
        this.onFrame(frame, {});
        return;
      case "ready":
        this.onReady(frame);
        return;
      case "msg":
        if (frame.ref) this.inFlight.delete(frame.ref);
        if (!this.firstSight(frame)) return; // seen before the reconnect
        this.onFrame(frame, {});
        return;
      case "error":
        this.onError(frame);
        return;
      default:
        this.onFrame(frame, {});
    }
  }

  onReady(frame) {
    const reconnect = this.loggedIn && !this.ready;
    this.room = frame.room;
    this.name = frame.name;
    if (frame.resume) this.token = frame.resume;
    let room = this.rooms.get(frame.room);
    if (!room) {
      room = { epoch: null, floor: 0, ids: new Set(), last: null };
      this.rooms.set(frame.room, room);
    }
    let truncated = Boolean(frame.truncated);
    if (frame.epoch && frame.epoch !== room.epoch) {
      if (room.epoch) {
        truncated = true;
        room = { epoch: null, floor: 0, ids: new Set(), last: null };
        this.rooms.set(frame.room, room);
      }
      room.epoch = frame.epoch;
    }
    const history = Array.isArray(frame.history) ? [...frame.history] : [];
    history.sort((a, b) => a.id - b.id);
    const missed = history.filter((msg) => this.firstSight(msg));
    this.loggedIn = true;
    this.ready = true;
    this.attempt = 0;
    this.lostAt = null;
    this.setState("connected", {});
    this.onFrame(frame, { missed, truncated, reconnect });
    // after a reconnect, what was typed and never acknowledged goes again with the same
    // txn: the server stores it once whether or not the first copy had arrived
    if (reconnect) for (const pending of this.inFlight.values()) this.send(pending);
  }

  onError(frame) {
    const code = frame.code;
    if (!this.ready) {
      if (!this.loggedIn && LOGIN_CODES.has(code)) {
        this.onFrame(frame, { login: true });
        this.stop(frame.message || code);
        return;
      }
      if (code === "name_taken" && this.offeredToken) {
        // the server has not yet noticed the old connection died: try again a while
        const since = this.lostAt ?? performance.now() / 1000;
        if (performance.now() / 1000 - since < NAME_TAKEN_RETRY_FOR) {
          this.onFrame(frame, { retrying: true });
          return; // the server closes; onclose schedules the retry
        }
      }
    }
    if (FINAL_CODES.has(code)) {
      this.onFrame(frame, { final: true });
      this.stop(frame.message || code);
      return;
    }
    this.onFrame(frame, {});
  }

  /** Record a message as seen; false when it was seen before (do not show it again). */
  firstSight(msg) {
    if (typeof msg.id !== "number" || typeof msg.room !== "string") return true;
    let room = this.rooms.get(msg.room);
    if (!room) {
      room = { epoch: null, floor: 0, ids: new Set(), last: null };
      this.rooms.set(msg.room, room);
    }
    if (msg.id <= room.floor || room.ids.has(msg.id)) return false;
    room.ids.add(msg.id);
    if (room.last === null || msg.id > room.last) room.last = msg.id;
    if (room.ids.size > SEEN_PER_ROOM) {
      const sorted = [...room.ids].sort((a, b) => a - b);
      const drop = sorted.slice(0, sorted.length - SEEN_PER_ROOM);
      for (const id of drop) room.ids.delete(id);
      room.floor = drop[drop.length - 1];
    }
    return true;
  }

  /** The link is gone: try again after a backoff pause, unless it is over. */
  lost(why) {
    this.ready = false;
    this.clearTimers();
    if (this.stopped) return;
    // never logged in yet: retried all the same (the server may be starting)
    const now = performance.now() / 1000;
    if (this.lostAt === null) this.lostAt = now;
    if (now - this.lostAt > RETRY_FOR) {
      this.stop(`no connection for ${RETRY_FOR} s (${why})`);
      return;
    }
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.random);
    const due = now + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil(due - performance.now() / 1000));
      this.setState("reconnecting", { seconds: left, why });
    };
    tick();
    this.tickTimer = setInterval(tick, 250);
    this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  /** A frame arrived: the link lives; arm the silence watchdog again. */
  heard() {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      if (this.ws) this.ws.close();
    }, SILENCE_LIMIT * 1000);
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearInterval(this.tickTimer);
    clearTimeout(this.silenceTimer);
    this.retryTimer = this.tickTimer = this.silenceTimer = null;
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}
