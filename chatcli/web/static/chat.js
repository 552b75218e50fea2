// The chat column: what the person types (parseInput) and the message list (ChatLog).
//
// Every piece of text from the network goes into the page through textContent on
// elements made with createElement: a message saying <img src=x onerror=...> shows
// those characters and creates no element.

import { colourFor } from "./colours.js";

export const HELP = [
  "/me TEXT: an action",
  "/msg NAME TEXT: a direct message (also /dm)",
  "/who: who is in this room",
  "/rooms: the rooms, with how many are in each",
  "/join ROOM: go to another room (or click one in the list)",
  "/quit: leave",
  "//TEXT: say TEXT starting with a slash",
];

/** What a typed line asks for: {kind, ...} (kind "error" with a message if malformed). */
export function parseInput(line) {
  const text = line.replace(/\s+$/u, "");
  if (!text.trim()) return { kind: "empty" };
  if (!text.startsWith("/")) return { kind: "say", text };
  if (text.startsWith("//")) return { kind: "say", text: text.slice(1) };
  const match = /^\/(\S+)\s*(.*)$/su.exec(text);
  const command = match[1].toLowerCase();
  const rest = match[2];
  switch (command) {
    case "me":
      return rest.trim() ? { kind: "me", text: rest } : { kind: "error", message: "usage: /me TEXT" };
    case "msg":
    case "dm":
    case "tell": {
      const dm = /^(\S+)\s+(.+)$/su.exec(rest);
      return dm ? { kind: "dm", to: dm[1], text: dm[2] } : { kind: "error", message: "usage: /msg NAME TEXT" };
    }
    case "who":
    case "names":
      return { kind: "who" };
    case "rooms":
    case "list":
      return { kind: "rooms" };
    case "join":
    case "j":
      return rest.trim() ? { kind: "join", room: rest.trim() } : { kind: "error", message: "usage: /join ROOM" };
    case "help":
    case "?":
      return { kind: "help" };
    case "quit":
    case "exit":
    case "bye":
      return { kind: "quit" };
    default:
      return { kind: "error", message: `unknown command /${command}: /help lists them` };
  }
}

/** HH:MM:SS of a server timestamp (Unix seconds), in the browser's time zone. */
export function clock(ts) {
  const date = ts ? new Date(ts * 1000) : new Date();
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function span(text, className) {
  const el = document.createElement("span");
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

/** A name in its colour (the same as in a terminal). */
export function nameSpan(name, className = "name") {
  const el = span(name, className);
  el.style.color = colourFor(name);
  return el;
}

/** The message list, with an unread marker. */
export class ChatLog {
  constructor(list, { me, watching, onUnread }) {
    this.list = list;
    this.me = me; // () => current name
    this.watching = watching; // () => whether the person can see the list now
    this.onUnread = onUnread; // (count) => void
    this.unread = 0;
    this.marker = null;
    this.pending = new Map(); // ref -> element of a message not yet acknowledged
  }

  isMe(name) {
    return typeof name === "string" && name.toLowerCase() === (this.me() || "").toLowerCase();
  }

  /** Append one line: `parts` are strings or elements; returns the line element. */
  add(kind, parts, ts, { count = false } = {}) {
    const nearBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    if (count && !this.watching()) {
      if (this.unread === 0) {
        this.marker?.remove();
        this.marker = document.createElement("li");
        this.marker.className = "unread-marker";
        this.marker.textContent = "new messages";
        this.list.append(this.marker);
      }
      this.unread += 1;
      this.onUnread(this.unread);
    }
    const li = document.createElement("li");
    li.className = `line ${kind}`;
    li.append(span(clock(ts), "time"));
    for (const part of parts) li.append(typeof part === "string" ? span(part) : part);
    this.list.append(li);
    if (nearBottom || !this.watching()) this.list.scrollTop = this.list.scrollHeight;
    return li;
  }

  /** The person is looking again: the count goes, the marker stays where reading starts. */
  seen() {
    if (this.unread === 0) return;
    this.unread = 0;
    this.onUnread(0);
  }

  /** A message of ours sent but not yet stored: shown faint until its ack. */
  pendingLine(ref, text, action) {
    const parts = action
      ? ["* ", nameSpan(this.me(), "name own"), " ", span(text, "text")]
      : [nameSpan(this.me(), "name own"), span(": "), span(text, "text")];
    const li = this.add("msg own pending", parts, null);
    this.pending.set(ref, li);
  }

  msg(frame, { history = false } = {}) {
    if (frame.ref) {
      this.pending.get(frame.ref)?.remove();
      this.pending.delete(frame.ref);
    }
    const own = this.isMe(frame.from);
    const who = nameSpan(frame.from, own ? "name own" : "name");
    const text = span(frame.text, own ? "text own" : "text");
    const kind = `msg${own ? " own" : ""}${history ? " history" : ""}${frame.action ? " action" : ""}`;
    const parts = frame.action ? ["* ", who, " ", text] : [who, span(": "), text];
    this.add(kind, parts, frame.ts, { count: !history && !own });
  }

  dm(frame) {
    const own = this.isMe(frame.from);
    const parts = [span("[dm] ", "dm-mark"), nameSpan(frame.from, own ? "name own" : "name"),
      span(" → "), nameSpan(frame.to), span(": "), span(frame.text, own ? "text own" : "text")];
    this.add(`dm${own ? " own" : ""}`, parts, frame.ts, { count: !own });
  }

  presence(frame) {
    const parts = frame.type === "join"
      ? [nameSpan(frame.name), span(` joined ${frame.room}`)]
      : [nameSpan(frame.name), span(` left ${frame.room} (${frame.reason})`)];
    this.add("presence", parts, frame.ts);
  }

  notice(text, kind = "notice") {
    this.add(kind, [span(text)], null);
  }

  rule(text) {
    const li = document.createElement("li");
    li.className = "rule";
    li.textContent = text;
    this.list.append(li);
    this.list.scrollTop = this.list.scrollHeight;
  }
}
