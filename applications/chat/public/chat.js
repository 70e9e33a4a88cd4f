// The chat page: one websocket to the gateway, workerman-chat's JSON messages.
// Everything users typed is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  socket: null,
  name: null,           // set once the user logged in; used again after a reconnect
  room: null,
  clientId: null,
  users: new Map(),     // client_id -> name
  retry: 0,
  pings: 0,             // pings answered (the tests read it)
};
window.chatState = state;

// The gateway is on this page's host, at the port /config.js names (?port= wins).
function gatewayUrl() {
  const port = params.get("port") || window.GATEWAY_PORT || 7272;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.hostname + ":" + port + "/";
}

function connect() {
  const socket = state.socket = new WebSocket(gatewayUrl());
  socket.onopen = () => {
    state.retry = 0;
    setStatus(true);
    if (state.name) login();          // back after the server went away
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = () => {
    if (state.socket !== socket) return;
    setStatus(false);
    // Try again soon, then less often: 0.5 s, 1 s, 2 s, ... at most 5 s.
    const delay = Math.min(5000, 500 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
    return true;
  }
  return false;
}

function login() {
  send({type: "login", client_name: state.name, room_id: state.room});
}

const handlers = {
  ping() { state.pings++; send({type: "pong"}); },
  login(message) {
    if (message.client_list) {        // our own login: the room's users
      state.clientId = message.client_id;
      state.users = new Map(Object.entries(message.client_list));
      $("login").hidden = true;
      $("chat").hidden = false;
      $("room-title").textContent = "room " + state.room;
      $("content").focus();
      system(message.time, "you joined room " + state.room);
    } else {
      state.users.set(message.client_id, message.client_name);
      system(message.time, message.client_name + " joined");
    }
    showUsers();
  },
  say(message) {
    const from = message.from_client_id === state.clientId ? "you" : message.from_client_name;
    let meta = from;
    if (message.to_client_id !== "all") {
      const to = message.to_client_id === state.clientId ? "you"
        : (state.users.get(message.to_client_id) || "someone");
      meta = from + " to " + to + " (private)";
    }
    addMessage(message.time, meta, message.content, message.to_client_id !== "all");
  },
  logout(message) {
    state.users.delete(message.from_client_id);
    showUsers();
    system(message.time, message.from_client_name + " left");
  },
  error(message) {
    const item = system("", message.message);
    item.classList.add("error");
  },
};

function receive(message) {
  const handler = handlers[message.type];
  if (handler) handler(message);
}

function addMessage(time, meta, text, isPrivate) {
  const item = document.createElement("li");
  item.className = "message" + (isPrivate ? " private" : "");
  const head = document.createElement("span");
  head.className = "meta";
  head.textContent = meta + " · " + time;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(head, body);
  return append(item);
}

function system(time, text) {
  const item = document.createElement("li");
  item.className = "system";
  item.textContent = time ? text + " · " + time : text;
  return append(item);
}

function append(item) {
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
  return item;
}

function showUsers() {
  const list = $("users");
  const select = $("to");
  const chosen = select.value;
  list.replaceChildren();
  select.replaceChildren(new Option("everyone", "all"));
  for (const [id, name] of state.users) {
    const item = document.createElement("li");
    item.dataset.id = id;
    item.textContent = name;
    if (id === state.clientId) {
      item.classList.add("me");
    } else {
      item.onclick = () => { select.value = id; $("content").focus(); };
      select.append(new Option(name, id));
    }
    list.append(item);
  }
  select.value = state.users.has(chosen) ? chosen : "all";
}

function setStatus(online) {
  $("status").textContent = online ? "connected" : "reconnecting…";
  $("status").classList.toggle("offline", !online);
}

$("room").value = params.get("room_id") || "1";
$("login").onsubmit = (event) => {
  event.preventDefault();
  state.name = $("name").value.trim();
  state.room = $("room").value.trim();
  if (state.name && state.room) login();
};
$("say").onsubmit = (event) => {
  event.preventDefault();
  const content = $("content").value;
  if (content.trim() && send({type: "say", to_client_id: $("to").value, content: content})) {
    $("content").value = "";
  }
};

connect();
