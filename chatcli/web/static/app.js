// The chatcli page: wires the session (session.js), the chat column (chat.js) and the
// whiteboard (board.js) to the document. Loaded as an ES module; no build step, nothing
// fetched but this server's own files and its WebSocket.

import { BoardModel, BoardView } from "./board.js";
import { ChatLog, HELP, nameSpan, parseInput } from "./chat.js";
import { colourFor } from "./colours.js";
import { Session, socketUrl } from "./session.js";

/** Stroke colours offered (matplotlib's tab10 and black: distinct, readable on white). */
export const SWATCHES = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000",
];
const PHONE = window.matchMedia("(max-width: 800px)");
const ROOMS_EVERY = 30_000; // ms between refreshes of the rooms list

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  me: null,
  room: null,
  op: false,
  users: new Set(),
  rooms: [],
  tab: "chat",
  roomsAsked: false, // the person typed /rooms: the next list is also written in the log
};

const model = new BoardModel();
const log = new ChatLog($("log"), {
  me: () => state.me,
  watching: () => !document.hidden && (!PHONE.matches || state.tab === "chat"),
  onUnread: showUnread,
});
const view = new BoardView({
  canvas: $("canvas"),
  model,
  send: (frame) => Boolean(state.session?.send(frame)),
  me: () => state.me,
  isOp: () => state.op,
  notify: (text) => log.notice(text),
});

// what tests (and curious people in the console) can look at
window.chatcliBoard = model;
window.chatcli = { state, model, view, log, colourFor };

// -- connection state ---------------------------------------------------------------

function showState(name, detail) {
  const el = $("conn");
  document.body.dataset.conn = name;
  if (name === "connected") el.textContent = "connected";
  else if (name === "connecting") el.textContent = "connecting…";
  else if (name === "reconnecting") {
    el.textContent = detail.seconds > 0 ? `reconnecting in ${detail.seconds} s` : "reconnecting…";
  } else el.textContent = detail.reason ? `offline: ${detail.reason}` : "offline";
}

function showUnread(count) {
  const badge = $("unread");
  badge.hidden = count === 0;
  badge.textContent = String(count);
  document.title = count ? `(${count}) chatcli` : "chatcli";
}

function showWhere() {
  const where = $("where");
  where.replaceChildren();
  if (!state.me) return;
  where.append(`#${state.room} as `, nameSpan(state.me, "name own"));
  if (state.op) where.append(" (op)");
}

function showUsers() {
  const list = $("users");
  list.replaceChildren();
  for (const name of [...state.users].sort((a, b) => a.localeCompare(b))) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.title = `send ${name} a direct message`;
    button.append(nameSpan(name, name === state.me ? "name own" : "name"));
    button.addEventListener("click", () => {
      $("line").value = `/msg ${name} `;
      selectTab("chat");
      $("line").focus();
    });
    li.append(button);
    list.append(li);
  }
}

function showRooms() {
  const list = $("rooms");
  list.replaceChildren();
  const rooms = [...state.rooms];
  if (state.room && !rooms.some((r) => r.name === state.room)) {
    rooms.push({ name: state.room, users: state.users.size });
  }
  for (const room of rooms) {
    // the current room's count is known exactly, between two refreshes of the list too
    if (room.name === state.room) room.users = state.users.size;
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.room = room.name;
    button.textContent = `#${room.name}`;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = String(room.users);
    button.append(count);
    if (room.name === state.room) button.classList.add("current");
    button.addEventListener("click", () => joinRoom(room.name));
    li.append(button);
    list.append(li);
  }
}

// -- frames from the server ---------------------------------------------------------

function onFrame(frame, info) {
  switch (frame.type) {
    case "welcome":
      if (Array.isArray(frame.rooms)) state.rooms = frame.rooms;
      break;
    case "ready":
      onReady(frame, info);
      break;
    case "msg":
      log.msg(frame);
      break;
    case "dm":
      log.dm(frame);
      view.settle(frame.ref);
      break;
    case "join":
    case "leave":
      if (frame.room === state.room) {
        if (frame.type === "join") state.users.add(frame.name);
        else state.users.delete(frame.name);
        showUsers();
        showRooms();
      }
      log.presence(frame);
      break;
    case "nick":
      state.users.delete(frame.old);
      state.users.add(frame.name);
      if (frame.old === state.me) state.me = frame.name;
      showUsers();
      showWhere();
      log.notice(`${frame.old} is now ${frame.name}`, "presence");
      break;
    case "users":
      if (frame.room === state.room) {
        state.users = new Set(frame.users);
        showUsers();
      }
      log.notice(`in ${frame.room}: ${frame.users.join(", ")}`);
      break;
    case "rooms":
      state.rooms = Array.isArray(frame.rooms) ? frame.rooms : [];
      showRooms();
      if (state.roomsAsked) {
        state.roomsAsked = false;
        log.notice(`rooms: ${state.rooms.map((r) => `${r.name} (${r.users})`).join(", ")}`);
      }
      break;
    case "draw":
    case "erase":
    case "move":
    case "clear":
      if (frame.type === "move") view.moved(frame.id);
      if (frame.room === undefined || frame.room === state.room) model.apply(frame);
      view.settle(frame.ref);
      break;
    case "error":
      onError(frame, info);
      break;
    default:
      break; // event types this page does not know are ignored (forward compatibility)
  }
}

function onReady(frame, { missed, truncated, reconnect }) {
  const roomChanged = frame.room !== state.room;
  state.me = frame.name;
  state.room = frame.room;
  state.op = Boolean(frame.op);
  state.users = new Set(frame.users || []);
  $("login").hidden = true;
  $("clear-all").hidden = !state.op;
  localStorage.setItem("chatcli.name", frame.name);
  localStorage.setItem("chatcli.room", frame.room);
  if (roomChanged) log.rule(`#${frame.room}`);
  for (const msg of missed) log.msg(msg, { history: !reconnect });
  if (truncated) log.notice("some earlier messages are no longer kept", "notice");
  if (reconnect) log.notice(`reconnected${missed.length ? `: ${missed.length} missed` : ""}`);
  else if (missed.length) log.rule("history above, live below");
  view.forget();
  model.reset(frame.room, frame.board || []);
  showWhere();
  showUsers();
  showRooms();
  state.session.send({ type: "rooms" });
}

function onError(frame, info) {
  view.settle(frame.ref);
  if (info.login) {
    $("login").hidden = false;
    $("login-error").textContent = frame.message || frame.code;
    if (frame.code === "auth_failed") $("password-row").hidden = false;
    return;
  }
  const text = `${frame.code}: ${frame.message || ""}`;
  log.notice(info.retrying ? `${text} (trying again)` : text, "error");
  if (info.final) showLogin(text); // kicked, replaced...: the person may come back
}

/** The login form again (after /quit or a final refusal), the last name filled in. */
function showLogin(message = "") {
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-name").focus();
}

// -- what the person does -------------------------------------------------------------

function joinRoom(room) {
  if (room === state.room) return;
  if (!state.session?.send({ type: "join", room })) log.notice("not connected", "error");
}

function submitLine(event) {
  event.preventDefault();
  const input = $("line");
  const command = parseInput(input.value);
  const session = state.session;
  if (!session) return;
  input.value = "";
  switch (command.kind) {
    case "empty":
      return;
    case "say":
    case "me": {
      const action = command.kind === "me";
      const ref = session.say(command.text, action);
      log.pendingLine(ref, command.text, action);
      log.marker?.remove();
      return;
    }
    case "dm":
      if (!session.send({ type: "dm", to: command.to, text: command.text })) log.notice("not connected", "error");
      return;
    case "who":
      if (!session.send({ type: "who" })) log.notice("not connected", "error");
      return;
    case "rooms":
      if (session.send({ type: "rooms" })) state.roomsAsked = true;
      else log.notice("not connected", "error");
      return;
    case "join":
      joinRoom(command.room);
      return;
    case "help":
      for (const line of HELP) log.notice(line);
      return;
    case "quit":
      session.quit();
      showLogin("you left; join again?");
      return;
    default:
      log.notice(command.message, "error");
  }
}

function login(event) {
  event.preventDefault();
  const name = $("login-name").value.trim();
  const room = $("login-room").value.trim() || "lobby";
  const password = $("login-password").value;
  $("login-error").textContent = "";
  state.session?.stop("logged out");
  // a new session starts a new conversation: its ready brings the history again
  $("log").replaceChildren();
  state.room = null;
  state.session = new Session({
    url: socketUrl(),
    name,
    room,
    password,
    onFrame,
    onState: showState,
  });
  window.chatcli.session = state.session;
  state.session.start();
}

function selectTab(tab) {
  state.tab = tab;
  document.body.dataset.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  if (tab === "chat") log.seen();
  if (tab === "board") view.fit();
}

function setupTools() {
  for (const button of document.querySelectorAll("#tool-buttons button")) {
    button.addEventListener("click", () => {
      view.tool = button.dataset.tool;
      for (const other of document.querySelectorAll("#tool-buttons button")) {
        other.classList.toggle("active", other === button);
      }
      $("canvas").dataset.tool = view.tool;
    });
  }
  const swatches = $("swatches");
  for (const color of SWATCHES) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "swatch";
    button.dataset.color = color;
    button.title = color;
    button.style.backgroundColor = color;
    if (color === view.color) button.classList.add("active");
    button.addEventListener("click", () => {
      view.color = color;
      for (const other of swatches.children) other.classList.toggle("active", other === button);
    });
    swatches.append(button);
  }
  $("width").addEventListener("input", (event) => {
    view.width = Number(event.target.value);
    $("width-value").textContent = event.target.value;
  });
  $("board-text").addEventListener("input", (event) => {
    view.text = event.target.value;
  });
  $("clear-mine").addEventListener("click", () => {
    if (!state.session?.send({ type: "clear" })) log.notice("not connected", "error");
  });
  $("clear-all").addEventListener("click", () => {
    if (!state.session?.send({ type: "clear", all: true })) log.notice("not connected", "error");
  });
}

function setup() {
  $("login-name").value = localStorage.getItem("chatcli.name") || "";
  $("login-room").value = localStorage.getItem("chatcli.room") || "lobby";
  $("login-form").addEventListener("submit", login);
  $("say-form").addEventListener("submit", submitLine);
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("join-room").value.trim();
    $("join-room").value = "";
    if (room) joinRoom(room);
  });
  $("refresh-rooms").addEventListener("click", () => state.session?.send({ type: "rooms" }));
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && (!PHONE.matches || state.tab === "chat")) log.seen();
  });
  PHONE.addEventListener("change", () => view.fit());
  setupTools();
  setInterval(() => {
    if (state.session?.ready) state.session.send({ type: "rooms" });
  }, ROOMS_EVERY);
  showState("offline", {});
  $("login-name").focus();
}

setup();
