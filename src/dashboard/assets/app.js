// The gossip-roster dashboard: one plain ES module, no framework, no build step.
//
// The node pushes over server-sent events (/api/stream): a snapshot, then patches
// (members that changed, new feed lines, figures every 2 s). Members and actors are drawn
// in virtualised lists (fixed row height, only the visible rows exist in the DOM), so a
// roster of 1,000 members and 100,000 actors stays responsive. Every string from the
// cluster is set as text (textContent), never parsed as HTML.

const ROW = 24;
const FEED_KEEP = 500;
const HEALTH = ["passing", "warning", "critical"];

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/// A list that only renders the rows in view: a sizer gives the scroll height, a small
/// pool of absolutely placed rows is refilled on scroll.
class VList {
  constructor(container, columns, fill) {
    this.box = container;
    this.columns = columns;
    this.fill = fill;
    this.items = [];
    this.pool = [];
    this.sizer = el("div", "sizer");
    this.box.append(this.sizer);
    this.box.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(this.box);
  }
  setItems(items) {
    this.items = items;
    this.sizer.style.height = `${items.length * ROW}px`;
    this.schedule();
  }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }
  render() {
    const first = Math.max(0, Math.floor(this.box.scrollTop / ROW) - 2);
    const count = Math.ceil(this.box.clientHeight / ROW) + 5;
    const last = Math.min(this.items.length, first + count);
    const need = last - first;
    while (this.pool.length < need) {
      const row = el("div", "row " + this.columns);
      row.cells = [];
      this.box.append(row);
      this.pool.push(row);
    }
    for (let i = 0; i < this.pool.length; i++) {
      const row = this.pool[i];
      if (i < need) {
        row.hidden = false;
        row.style.transform = `translateY(${(first + i) * ROW}px)`;
        this.fill(row, this.items[first + i]);
      } else {
        row.hidden = true;
      }
    }
  }
}

/// Sets the row's cells (spans) to `values`: [text, className] pairs or plain text.
function cells(row, values) {
  while (row.cells.length < values.length) {
    const c = el("span");
    row.append(c);
    row.cells.push(c);
  }
  values.forEach((v, i) => {
    const c = row.cells[i];
    const [text, cls] = Array.isArray(v) ? v : [v, ""];
    if (c.textContent !== text) c.textContent = text;
    if (c.className !== cls) c.className = cls;
    c.title = text;
  });
}

// ---- state ----
const state = {
  self: null,
  status: null,
  members: new Map(), // id -> member (as sent)
  order: [], // member ids, sorted
  feed: [],
  series: [],
  query: "",
  loadedAt: null,
  patches: 0,
};

function displayState(m) {
  if (state.status && state.status.down && state.self && m.id === state.self.id) return "down";
  return m.state;
}

function stability(m) {
  if (m.state === "dead" || m.state === "left") return ["–", "muted"];
  // The node's own word (`status`: flapping = flipped at least once lately), with the count.
  if (m.flips > 0) return [`flapping (${m.flips} ${m.flips === 1 ? "flip" : "flips"})`, "flapping"];
  if (m.stable === null || m.stable === undefined) return ["self", "muted"];
  return m.stable ? ["stable", ""] : ["settling", "muted"];
}

function tagText(m) {
  // A value with a space, comma or quote is quoted, as in `gossip-node members`: it cannot
  // pass for another tag.
  return Object.entries(m.tags || {})
    .map(([k, v]) => (/[\s,"]/.test(v) ? `${k}=${JSON.stringify(v)}` : `${k}=${v}`))
    .join(" ");
}

function memberMatches(m, q) {
  if (!q) return true;
  return (
    m.id.toLowerCase().includes(q) ||
    m.addr.toLowerCase().includes(q) ||
    displayState(m).includes(q) ||
    tagText(m).toLowerCase().includes(q)
  );
}

// ---- lists ----
let memberList, actorList;

function fillMember(row, m) {
  const s = displayState(m);
  row.className = `row member-cols member state-${s}`;
  row.dataset.id = m.id;
  row.dataset.state = s;
  const [stab, stabCls] = stability(m);
  cells(row, [
    [s, `st st-${s}`],
    m.id,
    m.addr,
    String(m.generation),
    String(m.incarnation),
    [stab, stabCls],
    String(m.actors.length),
    tagText(m),
  ]);
}

function fillActor(row, r) {
  const [m, a, owner] = r;
  const [name, health] = a;
  row.className = "row actor-cols actor";
  row.dataset.actor = name;
  row.dataset.node = m.id;
  const note = (m.notes && m.notes[name]) || "";
  cells(row, [
    name,
    [m.id, `st-${displayState(m)}`],
    [HEALTH[health] || "?", `h-${HEALTH[health]}`],
    [owner || "none", owner === m.id ? "owner-self" : "muted"],
    note,
  ]);
}

let rebuildPending = false;
function rebuild() {
  if (rebuildPending) return;
  rebuildPending = true;
  requestAnimationFrame(() => {
    rebuildPending = false;
    rebuildNow();
  });
}

function rebuildNow() {
  const q = state.query;
  const rows = [];
  const actors = [];
  const owners = new Map();
  for (const id of state.order) {
    const m = state.members.get(id);
    for (const a of m.actors) if (a[2]) owners.set(a[0], id);
  }
  let total = 0;
  for (const id of state.order) {
    const m = state.members.get(id);
    if (memberMatches(m, q)) rows.push(m);
    const nodeHit = q && m.id.toLowerCase().includes(q);
    total += m.actors.length;
    for (const a of m.actors) {
      if (!q || nodeHit || a[0].toLowerCase().includes(q)) actors.push([m, a, owners.get(a[0])]);
    }
  }
  memberList.setItems(rows);
  actorList.setItems(actors);
  $("members-count").textContent = `${rows.length} of ${state.members.size}`;
  $("actors-count").textContent = `${actors.length} of ${total}`;
  $("shown").textContent = q ? `filter "${q}": ${rows.length} members, ${actors.length} actors` : "";
  renderCounts();
}

function renderCounts() {
  const by = { alive: 0, suspect: 0, dead: 0, left: 0, down: 0 };
  for (const m of state.members.values()) by[displayState(m)] = (by[displayState(m)] || 0) + 1;
  const box = $("counts");
  box.replaceChildren();
  for (const [k, n] of Object.entries(by)) {
    if (n === 0 && (k === "down" || k === "left")) continue;
    const c = el("span", `st st-${k}`, `${n} ${k}`);
    c.dataset.state = k;
    c.dataset.count = String(n);
    box.append(c);
  }
}

function setMembers(list) {
  for (const m of list) state.members.set(m.id, m);
}

function reorder() {
  state.order = [...state.members.keys()].sort();
}

// ---- feed ----
function timeText(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}

function feedItem(e) {
  const li = el("li", "feed-item");
  li.dataset.kind = e.kind;
  if (e.node) li.dataset.node = e.node;
  const t = el("time", "", timeText(e.t));
  t.dateTime = new Date(e.t).toISOString();
  li.append(t, el("span", `k k-${e.kind}`, e.kind), document.createTextNode(" " + e.text));
  return li;
}

function addFeed(entries) {
  const box = $("feed");
  for (const e of entries) box.prepend(feedItem(e));
  while (box.childElementCount > FEED_KEEP) box.lastElementChild.remove();
}

// ---- quorum and header ----
function renderStatus() {
  const s = state.status;
  if (!s) return;
  const q = $("quorum");
  if (s.down) {
    q.textContent = "down";
    q.className = "badge bad";
  } else if (!s.joined) {
    q.textContent = "not joined";
    q.className = "badge warn";
  } else {
    q.textContent = s.in_majority ? "in majority" : "NOT in majority";
    q.className = s.in_majority ? "badge ok" : "badge bad";
  }
  q.dataset.inMajority = String(s.in_majority);
  const d = $("quorum-detail");
  d.replaceChildren(
    el("div", "", `${s.alive} alive of the largest recent cluster of ${s.largest_cluster} (majority needs more than ${Math.floor(s.largest_cluster / 2)})`),
    el("div", "muted", `${s.stable} stable, ${s.flapping.length} flapping; awareness ${s.awareness}; ${s.connections} connections`),
    el("div", "muted", `WAL last LSN ${s.wal_last_lsn}, durable ${s.wal_durable_lsn}, snapshot ${s.snapshot_lsn}; fsync ${s.fsync_policy}; up ${Math.round(s.uptime_ms / 1000)} s`),
  );
  if (s.down) d.prepend(el("div", "error", `down: ${s.down}`));
  if (state.self) $("self").textContent = `${state.self.id} · ${s.cluster || "(no cluster name)"} · ${state.self.addr}`;
}

// ---- charts ----
const CHARTS = [
  ["bytes sent /s", "bytes_sent", fmtBytes],
  ["bytes received /s", "bytes_received", fmtBytes],
  ["frames sent /s", "frames_sent", fmtNum],
  ["frames received /s", "frames_received", fmtNum],
  ["WAL bytes /s", "wal_bytes", fmtBytes],
  ["WAL fsyncs /s", "wal_fsyncs", fmtNum],
];

function fmtNum(x) {
  return x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(x < 10 ? 1 : 0);
}
function fmtBytes(x) {
  if (x >= 1 << 20) return `${(x / (1 << 20)).toFixed(1)} MiB`;
  if (x >= 1024) return `${(x / 1024).toFixed(1)} KiB`;
  return `${x.toFixed(0)} B`;
}

const charts = [];
function setupCharts() {
  const box = $("charts");
  for (const [label, key, fmt] of CHARTS) {
    const c = el("div", "chart");
    const head = el("div", "label");
    const name = el("span", "", label);
    const value = el("span", "", "–");
    head.append(name, value);
    const canvas = el("canvas");
    canvas.dataset.series = key;
    c.append(head, canvas);
    box.append(c);
    charts.push({ key, fmt, canvas, value });
  }
}

function rates(key) {
  const s = state.series;
  const out = [];
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i].t - s[i - 1].t) / 1000;
    if (dt > 0) out.push(Math.max(0, (s[i][key] - s[i - 1][key]) / dt));
  }
  return out;
}

function drawCharts() {
  for (const c of charts) {
    const r = rates(c.key);
    const cv = c.canvas;
    const w = (cv.width = cv.clientWidth || 140);
    const h = (cv.height = 40);
    const g = cv.getContext("2d");
    g.clearRect(0, 0, w, h);
    c.value.textContent = r.length ? c.fmt(r[r.length - 1]) : "–";
    if (r.length < 2) continue;
    const max = Math.max(...r) || 1;
    g.strokeStyle = "#2b6cb0";
    g.lineWidth = 1.5;
    g.beginPath();
    r.forEach((v, i) => {
      const x = (i / (r.length - 1)) * (w - 2) + 1;
      const y = h - 2 - (v / max) * (h - 4);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
}

// ---- the stream ----
let source = null;

function onMessage(ev) {
  const msg = JSON.parse(ev.data);
  switch (msg.type) {
    case "snapshot":
      state.self = msg.self;
      state.status = msg.status;
      state.members = new Map();
      setMembers(msg.members);
      reorder();
      state.series = msg.series;
      $("feed").replaceChildren();
      addFeed(msg.feed);
      renderStatus();
      rebuildNow();
      drawCharts();
      if (state.loadedAt === null) state.loadedAt = performance.now();
      break;
    case "members": {
      const before = state.members.size;
      setMembers(msg.members);
      for (const id of msg.removed) state.members.delete(id);
      if (state.members.size !== before || msg.removed.length || msg.members.length) reorder();
      state.patches++;
      rebuild();
      break;
    }
    case "feed":
      addFeed(msg.entries);
      break;
    case "stats":
      state.status = msg.status;
      if (msg.sample) {
        state.series.push(msg.sample);
        if (state.series.length > 150) state.series.shift();
      }
      renderStatus();
      renderCounts();
      drawCharts();
      break;
  }
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = `badge ${cls}`;
}

function connect() {
  if (source) source.close();
  source = new EventSource("/api/stream");
  source.onopen = () => setConn("live", "ok");
  source.onmessage = onMessage;
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (a token that no longer works) or the node is gone: ask again shortly.
      setConn("disconnected", "bad");
      setTimeout(start, 2000);
    } else {
      setConn("reconnecting", "warn");
    }
  };
}

async function start() {
  let session;
  try {
    session = await (await fetch("/api/session", { cache: "no-store" })).json();
  } catch {
    setConn("unreachable", "bad");
    setTimeout(start, 2000);
    return;
  }
  $("logout").hidden = !session.token_required;
  if (!session.authenticated) {
    if (source) source.close();
    $("main").hidden = true;
    $("login").hidden = false;
    setConn("login needed", "warn");
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  connect();
}

async function login(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  const r = await fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (r.ok) {
    $("token").value = "";
    $("login-error").textContent = "";
    start();
  } else {
    $("login-error").textContent = "that token does not open this node's dashboard";
  }
}

async function logout() {
  await fetch("/api/logout", { method: "POST" });
  if (source) source.close();
  start();
}

function init() {
  memberList = new VList($("members"), "member-cols", fillMember);
  actorList = new VList($("actors"), "actor-cols", fillActor);
  setupCharts();
  let timer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.query = e.target.value.trim().toLowerCase();
      rebuild();
    }, 80);
  });
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  // For tests and measurements: read-only views of what the page holds.
  window.dashboard = {
    get loadedAt() {
      return state.loadedAt;
    },
    get members() {
      return state.members.size;
    },
    get actors() {
      let n = 0;
      for (const m of state.members.values()) n += m.actors.length;
      return n;
    },
    get patches() {
      return state.patches;
    },
  };
  start();
}

init();
