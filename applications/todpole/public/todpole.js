// The pond: a canvas game in the spirit of workerman-todpole. Every 30 ms the page
// moves its own tadpole (keys, or towards where you clicked / touched), eases the
// others towards where they last said they were, and draws everything. The server
// only relays: our "update" and "message" go to everyone else.
"use strict";

const TICK = 30;                 // ms per step, as the original
const SEND_EVERY = 6;            // ticks between two updates while moving (~180 ms)
const IDLE_UPDATE = 2000;        // ms: an update even when still, so newcomers see us
const FORGET_AFTER = 10000;      // ms without news: a tadpole has gone
const BUBBLE_TIME = 6000;        // ms a chat bubble stays
const MAX_SPEED = 6;
const TURN = 0.09;

const $ = (id) => document.getElementById(id);
const canvas = $("pond");
const context = canvas.getContext("2d");
const params = new URLSearchParams(location.search);

function newTadpole(id) {
  return {id, x: 0, y: 0, angle: 0, momentum: 0, name: "", messages: [],
          targetX: 0, targetY: 0, targetAngle: 0, seen: Date.now(), phase: Math.random() * 6};
}

const pond = {
  me: newTadpole(null),
  tadpoles: new Map(),           // id -> tadpole, the others
  keys: new Set(),
  target: null,                  // {x, y} in the pond, from a click or a touch
  socket: null,
  connected: false,
  age: 0,
  lastSent: 0,
  sentAt: {x: NaN, y: NaN, angle: NaN, name: null},
  retry: 0,
};
pond.me.name = localStorage.getItem("todpole.name") || "";
window.pond = pond;              // for the curious, and for the tests

// -- the connection ---------------------------------------------------------------

function gatewayUrl() {
  const port = params.get("port") || window.GATEWAY_PORT || 8282;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.hostname + ":" + port + "/";
}

function connect() {
  const socket = pond.socket = new WebSocket(gatewayUrl());
  socket.onopen = () => { pond.retry = 0; setStatus(true); };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const handler = handlers[message.type];
    if (handler) handler(message);
  };
  socket.onclose = () => {
    if (pond.socket !== socket) return;
    setStatus(false);
    pond.tadpoles.clear();
    setTimeout(connect, Math.min(5000, 500 * 2 ** pond.retry++));
  };
}

function send(message) {
  if (pond.socket && pond.socket.readyState === WebSocket.OPEN) {
    pond.socket.send(JSON.stringify(message));
    return true;
  }
  return false;
}

const handlers = {
  welcome(message) {
    pond.me.id = message.id;
    sendUpdate();
  },
  update(message) {
    let tadpole = pond.tadpoles.get(message.id);
    if (!tadpole) {
      tadpole = newTadpole(message.id);
      tadpole.x = message.x;
      tadpole.y = message.y;
      pond.tadpoles.set(message.id, tadpole);
    }
    tadpole.targetX = message.x;
    tadpole.targetY = message.y;
    tadpole.targetAngle = message.angle;
    tadpole.momentum = message.momentum;
    tadpole.name = message.name;
    tadpole.seen = Date.now();
  },
  message(message) {
    const tadpole = pond.tadpoles.get(message.id);
    if (tadpole) say(tadpole, message.message);
  },
  closed(message) { pond.tadpoles.delete(message.id); },
  ping() { send({type: "pong"}); },
};

function sendUpdate() {
  const me = pond.me;
  const update = {type: "update", x: round(me.x, 1), y: round(me.y, 1),
                  angle: round(me.angle, 3), momentum: round(me.momentum, 3)};
  if (me.name) update.name = me.name;
  if (send(update)) {
    pond.sentAt = {x: update.x, y: update.y, angle: update.angle, name: me.name};
    pond.lastSent = Date.now();
  }
}

function round(value, digits) {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function setStatus(online) {
  pond.connected = online;
  $("status").textContent = online ? "connected" : "reconnecting…";
  $("status").classList.toggle("offline", !online);
}

// -- moving -----------------------------------------------------------------------

function step() {
  pond.age++;
  steer(pond.me);
  swim(pond.me);
  const now = Date.now();
  for (const tadpole of pond.tadpoles.values()) {
    ease(tadpole);
    if (now - tadpole.seen > FORGET_AFTER) pond.tadpoles.delete(tadpole.id);
  }
  for (const tadpole of [pond.me, ...pond.tadpoles.values()]) {
    tadpole.messages = tadpole.messages.filter((m) => now - m.time < BUBBLE_TIME);
  }
  if (pond.me.id !== null && (moved() && pond.age % SEND_EVERY === 0
                              || now - pond.lastSent > IDLE_UPDATE)) {
    sendUpdate();
  }
  $("count").textContent = (pond.tadpoles.size + 1) + " in the pond";
  draw();
}

function moved() {
  const me = pond.me, sent = pond.sentAt;
  return round(me.x, 1) !== sent.x || round(me.y, 1) !== sent.y
    || round(me.angle, 3) !== sent.angle || me.name !== sent.name;
}

// Keys turn and push; a target (click, touch) is swum to, then forgotten.
function steer(me) {
  const keys = pond.keys;
  let thrust = false;
  if (keys.has("left")) me.angle -= TURN;
  if (keys.has("right")) me.angle += TURN;
  if (keys.has("up")) { me.momentum = Math.min(MAX_SPEED, me.momentum + 0.4); thrust = true; }
  if (keys.has("down")) me.momentum = Math.max(0, me.momentum - 0.6);
  if (pond.target) {
    const dx = pond.target.x - me.x, dy = pond.target.y - me.y;
    const distance = Math.hypot(dx, dy);
    if (distance < 8) {
      pond.target = null;
    } else {
      let turn = Math.atan2(dy, dx) - me.angle;
      turn = Math.atan2(Math.sin(turn), Math.cos(turn));    // the short way round
      me.angle += Math.max(-TURN * 2, Math.min(TURN * 2, turn));
      me.momentum = Math.min(MAX_SPEED, distance / 12, me.momentum + 0.4);
      thrust = true;
    }
  }
  if (!thrust) me.momentum *= 0.93;
  if (me.momentum < 0.01) me.momentum = 0;
}

function swim(me) {
  me.x += Math.cos(me.angle) * me.momentum;
  me.y += Math.sin(me.angle) * me.momentum;
  me.phase += 0.15 + me.momentum * 0.08;
}

function ease(tadpole) {
  tadpole.x += (tadpole.targetX - tadpole.x) * 0.2;
  tadpole.y += (tadpole.targetY - tadpole.y) * 0.2;
  let turn = tadpole.targetAngle - tadpole.angle;
  turn = Math.atan2(Math.sin(turn), Math.cos(turn));
  tadpole.angle += turn * 0.3;
  tadpole.phase += 0.15 + tadpole.momentum * 0.08;
}

function say(tadpole, text) {
  tadpole.messages.push({text, time: Date.now()});
  tadpole.messages = tadpole.messages.slice(-3);
}

// -- drawing ----------------------------------------------------------------------

function draw() {
  const width = Math.round(canvas.clientWidth * devicePixelRatio);
  const height = Math.round(canvas.clientHeight * devicePixelRatio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;       // the window changed size (or a phone turned)
    canvas.height = height;
  }
  context.setTransform(devicePixelRatio, 0, 0, devicePixelRatio, 0, 0);
  const w = width / devicePixelRatio, h = height / devicePixelRatio;
  const water = context.createRadialGradient(w / 2, h / 2, 0, w / 2, h / 2, Math.max(w, h));
  water.addColorStop(0, "#16607c");
  water.addColorStop(1, "#082c3c");
  context.fillStyle = water;
  context.fillRect(0, 0, w, h);
  // The camera follows our tadpole: the pond moves under it.
  const originX = w / 2 - pond.me.x, originY = h / 2 - pond.me.y;
  drawSpecks(originX, originY, w, h);
  for (const tadpole of pond.tadpoles.values()) {
    drawTadpole(tadpole, originX, originY, "#d8f3ff");
  }
  drawTadpole(pond.me, originX, originY, "#ffe27a");
}

// Specks of dust at fixed places in the pond, so swimming shows.
function drawSpecks(originX, originY, w, h) {
  const grid = 90;
  context.fillStyle = "#ffffff22";
  const left = Math.floor(-originX / grid) - 1, top = Math.floor(-originY / grid) - 1;
  for (let i = left; i < left + w / grid + 2; i++) {
    for (let j = top; j < top + h / grid + 2; j++) {
      const seed = Math.sin(i * 12.9898 + j * 78.233) * 43758.5453;
      const dx = (seed - Math.floor(seed)) * grid, dy = ((seed * 7) % 1 + 1) % 1 * grid;
      context.beginPath();
      context.arc(originX + i * grid + dx, originY + j * grid + dy, 1.5, 0, Math.PI * 2);
      context.fill();
    }
  }
}

function drawTadpole(tadpole, originX, originY, color) {
  const x = originX + tadpole.x, y = originY + tadpole.y;
  context.save();
  context.translate(x, y);
  context.rotate(tadpole.angle);
  // The tail: a wave behind the head, thinner towards its end.
  context.strokeStyle = color;
  context.lineCap = "round";
  for (let i = 0; i < 12; i++) {
    const t0 = i / 12, t1 = (i + 1) / 12;
    context.lineWidth = 5 * (1 - t0) + 0.5;
    context.beginPath();
    context.moveTo(-8 - t0 * 28, Math.sin(tadpole.phase - t0 * 5) * 5 * t0);
    context.lineTo(-8 - t1 * 28, Math.sin(tadpole.phase - t1 * 5) * 5 * t1);
    context.stroke();
  }
  context.fillStyle = color;
  context.beginPath();
  context.ellipse(0, 0, 10, 8, 0, 0, Math.PI * 2);
  context.fill();
  context.fillStyle = "#0b3a4e";
  for (const side of [-1, 1]) {
    context.beginPath();
    context.arc(4, side * 3.5, 1.6, 0, Math.PI * 2);
    context.fill();
  }
  context.restore();
  context.textAlign = "center";
  context.font = "12px system-ui, sans-serif";
  context.fillStyle = "#ffffffcc";
  const name = tadpole.name || (tadpole.id ? "Guest." + tadpole.id.slice(-4) : "");
  context.fillText(name, x, y + 26);
  drawBubbles(tadpole.messages, x, y - 18);
}

function drawBubbles(messages, x, y) {
  context.font = "13px system-ui, sans-serif";
  for (let i = messages.length - 1; i >= 0; i--) {
    const text = messages[i].text.length > 60 ? messages[i].text.slice(0, 59) + "…"
                                              : messages[i].text;
    const width = context.measureText(text).width + 16;
    context.fillStyle = "#ffffffe6";
    context.beginPath();
    context.roundRect(x - width / 2, y - 22, width, 20, 10);
    context.fill();
    context.fillStyle = "#0b3a4e";
    context.fillText(text, x, y - 8);
    y -= 24;
  }
}

// -- input ------------------------------------------------------------------------

const KEYS = {ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down",
              a: "left", d: "right", w: "up", s: "down"};

document.addEventListener("keydown", (event) => {
  if (event.target === $("chat")) {
    if (event.key === "Escape") $("chat").blur();
    return;
  }
  const key = KEYS[event.key];
  if (key) {
    pond.keys.add(key);
    pond.target = null;
    event.preventDefault();
  } else if (event.key === "Enter") {
    $("chat").focus();
    event.preventDefault();
  }
});
document.addEventListener("keyup", (event) => pond.keys.delete(KEYS[event.key]));
window.addEventListener("blur", () => pond.keys.clear());

canvas.addEventListener("pointerdown", (event) => {
  $("chat").blur();
  pond.target = {x: pond.me.x + event.clientX - canvas.clientWidth / 2,
                 y: pond.me.y + event.clientY - canvas.clientHeight / 2};
});

$("say").onsubmit = (event) => {
  event.preventDefault();
  const text = $("chat").value.trim();
  $("chat").value = "";
  const named = /^name:\s*(.*)$/i.exec(text);
  if (named) {
    pond.me.name = named[1].slice(0, 32);
    localStorage.setItem("todpole.name", pond.me.name);
  } else if (text && send({type: "message", message: text})) {
    say(pond.me, text);
  }
  $("chat").blur();
};

connect();
setInterval(step, TICK);
