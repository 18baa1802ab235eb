// xdplb console. Every 2 s it polls the summary (a few kilobytes at any size), one page of service rows (problems
// first) and the backends of the services opened, so a node with 10,000 backends draws about as much as one with
// ten. Rates and charts come from successive polls; the view (search, problems only, page, opened services) lives
// in the URL's fragment, so a link shows the same view. Everything is built with textContent (never innerHTML),
// so names and reasons cannot inject markup; charts are canvases.
"use strict";

const POLL_MS = 2000;
const HISTORY = 150;       // points kept per series: five minutes at one poll every 2 s
const PAGE = 50;           // service rows per page
const BACKEND_PAGE = 100;  // backend rows per opened service
const MAX_OPEN = 8;        // opened services polled at once

const view = {q: "", problems: false, offset: 0, open: []};  // mirrored in location.hash
const backendOffsets = new Map();  // service id -> first backend row shown
const series = new Map();          // key -> [{t, ...counters}], the last HISTORY samples
let pollSeq = 0;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function badge(text, cls) { return el("span", {class: "badge " + (cls || text)}, text); }

function si(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const steps = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, prefix] of steps) {
    if (Math.abs(value) >= size) return (value / size).toFixed(1) + " " + prefix + (unit || "");
  }
  return (Math.round(value * 10) / 10) + (unit ? " " + unit : "");
}

function ago(epoch, now) {
  if (!epoch) return "–";
  const s = Math.max(0, Math.round(now - epoch));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

// --- history: counters sampled per poll, rates between samples -------------------------------------------------

const FORGET_AFTER_S = 600;  // a series not sampled for ten minutes (a service no longer shown) is dropped

function forgetOld(now) {
  for (const [key, points] of series) {
    if (!points.length || now - points[points.length - 1].t > FORGET_AFTER_S) series.delete(key);
  }
}

function record(key, time, counters) {
  let points = series.get(key);
  if (!points) series.set(key, points = []);
  if (points.length && points[points.length - 1].t === time) return points;  // the same snapshot polled twice
  points.push({t: time, ...counters});
  if (points.length > HISTORY) points.shift();
  return points;
}

// Per-second rates of `field` between successive samples; null where a counter went back (a restart).
function rates(points, field) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const dt = points[i].t - points[i - 1].t;
    const dv = points[i][field] - points[i - 1][field];
    out.push(dt > 0 && dv >= 0 ? dv / dt : null);
  }
  return out;
}

function deltas(points, field) {
  const out = [];
  for (let i = 1; i < points.length; i++) out.push(Math.max(0, points[i][field] - points[i - 1][field]));
  return out;
}

function last(values) { return values.length ? values[values.length - 1] : null; }

// --- charts ------------------------------------------------------------------------------------------------------

function color(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888"; }

// Draw `lines` ([{values, color}]) on `canvas`, each scaled to the largest value of all; bars when `bars`.
function draw(canvas, lines, {bars = false, label = true} = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const max = Math.max(1e-9, ...lines.flatMap(line => line.values.filter(v => v !== null)));
  const slots = HISTORY - 1, step = width / slots, top = label ? 14 : 2;
  const y = v => height - 1 - (v / max) * (height - top - 2);
  lines.forEach((line, index) => {
    const offset = slots - line.values.length;
    g.strokeStyle = g.fillStyle = line.color;
    if (bars) {
      const w = Math.max(1, step / lines.length - 0.5);
      line.values.forEach((v, i) => {
        if (v) g.fillRect((offset + i) * step + index * w, y(v), w, height - 1 - y(v));
      });
      return;
    }
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    line.values.forEach((v, i) => {
      if (v === null) { drawing = false; return; }
      const x = (offset + i) * step;
      if (drawing) g.lineTo(x, y(v)); else g.moveTo(x, y(v));
      drawing = true;
    });
    g.stroke();
  });
  if (label) {
    g.fillStyle = color("--idle");
    g.font = "11px system-ui, sans-serif";
    g.fillText("max " + si(max, ""), 4, 11);
  }
}

function sparkline(key) {
  const canvas = el("canvas", {class: "spark", width: 120, height: 22});
  const points = series.get(key) || [];
  // drawn once the canvas is in the page and has its size
  requestAnimationFrame(() => draw(canvas, [{values: rates(points, "packets"), color: color("--pps")}], {label: false}));
  return canvas;
}

// --- fetching ----------------------------------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem("xdplb-token");
  return token ? {Authorization: "Bearer " + token} : {};
}

let tokenDeclined = false;

// Ask once per page for the token (api.read_token_required, or admin calls); false when declined.
function askToken() {
  if (tokenDeclined) return false;
  const entered = prompt("This API needs its bearer token (api.token_file):");
  if (!entered) {
    tokenDeclined = true;
    return false;
  }
  sessionStorage.setItem("xdplb-token", entered.trim());
  return true;
}

const FETCH_TIMEOUT_MS = 10000;  // a black-holed API shows as an error, and the next poll still comes

async function getJson(url) {
  const get = () => fetch(url, {cache: "no-store", headers: authHeaders(),
                                signal: AbortSignal.timeout(FETCH_TIMEOUT_MS)});
  const sent = sessionStorage.getItem("xdplb-token");
  let response = await get();
  // the polls go out together: one prompt for all, the others retry with what it stored
  if (response.status === 401 && (sessionStorage.getItem("xdplb-token") !== sent || askToken())) response = await get();
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error || "HTTP " + response.status) + " (" + url.split("?")[0] + ")");
  }
  return response.json();
}

function servicesUrl() {
  const params = new URLSearchParams({offset: view.offset, limit: PAGE});
  if (view.q) params.set("q", view.q);
  if (view.problems) params.set("problems", "1");
  return "/api/v1/services?" + params;
}

function backendsUrl(id) {
  return "/api/v1/backends?" + new URLSearchParams({service: id, offset: backendOffsets.get(id) || 0,
                                                     limit: BACKEND_PAGE});
}

async function poll() {
  const seq = ++pollSeq;
  clearTimeout(timer);
  const started = performance.now();
  try {
    const opened = view.open.slice(0, MAX_OPEN);
    const [summary, page, ...backends] = await Promise.all([
      getJson("/api/v1/summary"), getJson(servicesUrl()),
      ...opened.map(id => getJson(backendsUrl(id)).catch(error => ({error: error.message}))),
    ]);
    if (seq !== pollSeq) return;  // a newer poll (a search, a click) is on its way
    const fetched = performance.now();
    render(summary, page, new Map(opened.map((id, i) => [id, backends[i]])));
    showError("");
    document.body.dataset.fetchMs = Math.round(fetched - started);
    document.body.dataset.renderMs = Math.round(performance.now() - fetched);
    document.body.dataset.polls = Number(document.body.dataset.polls || 0) + 1;
  } catch (error) {
    if (seq === pollSeq) showError("API unreachable: " + error.message + " (retrying)");
  } finally {
    if (seq === pollSeq) timer = setTimeout(poll, POLL_MS);
  }
}

// --- rendering ---------------------------------------------------------------------------------------------------

function render(summary, page, opened) {
  const now = summary.time;
  const uptime = ago(summary.started_at, now).replace(" ago", "");
  document.getElementById("daemon").textContent = "v" + summary.version + " · " +
    (summary.ready ? "ready" : "starting") + " · up " + uptime + " · config " + summary.config_digest.slice(0, 12) +
    " · " + Object.entries(summary.interfaces).map(([i, m]) => i + " (" + m + ")").join(", ");
  document.getElementById("updated").textContent = "updated " + new Date(now * 1000).toLocaleTimeString();
  const totals = record("totals", now, {packets: summary.totals.rx_packets || 0,
                                        flows: summary.totals.flow_inserts || 0,
                                        up: summary.health_transitions.up || 0,
                                        down: summary.health_transitions.down || 0});
  forgetOld(now);
  renderOverview(summary, totals);
  renderCharts(totals);
  renderWithdrawn(summary);
  renderServices(page, opened);
  renderPeers(summary, now);
  renderDataplane(summary, totals);
}

function card(title, value, detail, bad) {
  return el("div", {class: "card " + (bad ? "bad" : "ok")}, el("div", {class: "muted"}, title),
    el("div", {class: "big"}, value), el("div", {class: "muted"}, detail));
}

function renderOverview(summary, totals) {
  const b = summary.backends, s = summary.services, v = summary.vips, p = summary.peers;
  const down = b.health.down || 0, unknown = b.health.unknown || 0;
  const drained = b.admin.drained || 0, disabled = b.admin.disabled || 0;
  const problems = Math.max(0, summary.not_serving_total - drained - disabled);  // not what an operator asked for
  const pps = last(rates(totals, "packets"));
  const flows = summary.flow_table_entries;
  document.getElementById("overview").replaceChildren(
    card("services up", s.up + " of " + s.total, s.total - s.up ? (s.total - s.up) + " down" : "all up", s.up < s.total),
    card("backends taking new flows", (b.dataplane.active || 0) + " of " + b.total,
      down + " down · " + unknown + " unknown · " + drained + " drained · " + disabled + " disabled", problems > 0),
    card("VIPs announced", v.announced + " of " + v.total, v.total - v.announced ? "see withdrawn below" : "all announced",
      v.announced < v.total),
    card("BGP sessions", p.established + " of " + p.total + " established", p.total ? "" : "none configured",
      p.established < p.total),
    card("traffic", si(pps, "pkt/s"), "flows in use: IPv4 " + si(flows.ipv4, "") + " · IPv6 " + si(flows.ipv6, "") +
      " of " + si(summary.flow_table_size, "") + " each", false),
    card("errors", summary.dataplane_errors + " data plane · " + summary.checker_restarts + " checker restarts",
      summary.last_reload_error ? "last reload refused: " + summary.last_reload_error : "last reload ok",
      Boolean(summary.last_reload_error) || summary.dataplane_errors > 0));
}

function renderCharts(totals) {
  const pps = rates(totals, "packets"), flows = rates(totals, "flows");
  draw(document.getElementById("traffic-chart"), [{values: pps, color: color("--pps")},
                                                   {values: flows, color: color("--flows")}]);
  document.getElementById("traffic-now").textContent = "now " + si(last(pps), "pkt/s") + ", " + si(last(flows), "flows/s");
  const up = deltas(totals, "up"), down = deltas(totals, "down");
  draw(document.getElementById("changes-chart"), [{values: up, color: color("--ok")}, {values: down, color: color("--bad")}],
       {bars: true});
  const sum = values => values.reduce((a, b) => a + b, 0);
  const span = totals.length > 1 ? totals[totals.length - 1].t - totals[0].t : 0;
  document.getElementById("changes-now").textContent = "last " + Math.round(span) + " s: " + sum(up) + " up, " +
    sum(down) + " down";
}

function renderWithdrawn(summary) {
  const list = summary.vips_withdrawn;
  const more = summary.vips.total - summary.vips.announced - list.length;
  document.getElementById("withdrawn-section").hidden = !list.length;
  document.getElementById("withdrawn").replaceChildren(...list.map(v => el("div", {class: "card bad"},
    el("div", {}, el("span", {class: "vip"}, v.prefix), " ", badge("withdrawn")),
    el("div", {class: "muted"}, v.reason), el("div", {class: "muted"}, v.services.join(", ")))),
    ...(more > 0 ? [el("div", {class: "card bad"}, "and " + more + " more (“only problems” below lists them)")] : []));
}

const ACTIONS = ["drain", "enable", "disable", "reset"];

// While the pointer is over the services table it is not redrawn under it: rows move with the state (problems
// first), and a button would be somewhere else by the time it is clicked. A click of the operator's redraws it once.
let pointing = false;
let redrawOnce = false;

function serviceRow(s, now, pinned) {
  const points = record("service|" + s.id, now, {packets: s.packets, flows: s.new_flows});
  const isOpen = view.open.includes(s.id);
  const serving = s.problems ? " bad" : s.not_serving ? " warn" : "";
  return el("tr", {class: "service" + (isOpen ? " open" : "") + (pinned ? " pinned" : ""), "data-service": s.id},
    el("td", {}, el("button", {type: "button", class: "toggle", "data-toggle": s.id, "aria-expanded": String(isOpen),
                               title: (isOpen ? "hide" : "show") + " the backends of " + s.id}, isOpen ? "▾" : "▸")),
    el("td", {class: "name"}, s.name, pinned ? el("span", {class: "override", title: "opened, not on this page"}, " opened") : null),
    el("td", {class: "mono"}, s.id),
    el("td", {}, badge(s.up ? "up" : "down")),
    el("td", {class: "num"}, s.healthy + " of " + s.backends + " (need " + s.need + ")"),
    el("td", {class: "num" + serving, title: s.problems + " with a problem, " + (s.not_serving - s.problems) + " drained or disabled"},
      s.not_serving),
    el("td", {class: "num"}, si(last(rates(points, "packets")), "")),
    el("td", {class: "num"}, si(last(rates(points, "flows")), "")),
    el("td", {}, sparkline("service|" + s.id)));
}

function renderServices(page, opened) {
  const now = page.time;
  const rows = [];
  const shown = new Set(page.services.map(s => s.id));
  // an opened service that left this page (it recovered, or went down and moved up) stays in view, on top
  const pinned = view.open.filter(id => !shown.has(id) && opened.get(id) && opened.get(id).service)
    .map(id => opened.get(id).service);
  for (const s of [...pinned, ...page.services]) {
    rows.push(serviceRow(s, now, !shown.has(s.id)));
    const isOpen = view.open.includes(s.id);
    if (isOpen) rows.push(el("tr", {class: "detail"}, el("td", {colSpan: 9}, detail(s, opened.get(s.id)))));
  }
  if (pointing && !redrawOnce) return;  // recorded, not redrawn
  redrawOnce = false;
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", {colSpan: 9, class: "muted"},
      page.total ? "no service on this page" : "no service matches" + (view.q ? " “" + view.q + "”" : ""))));
  }
  document.querySelector("#services tbody").replaceChildren(...rows);
  const end = Math.min(page.offset + page.services.length, page.total);
  document.getElementById("range").textContent = page.total ? (page.offset + 1) + "–" + end + " of " + page.total : "0";
  document.getElementById("prev").disabled = page.offset === 0;
  document.getElementById("next").disabled = end >= page.total;
}

function detail(service, answer) {
  if (!answer) return el("div", {class: "muted"}, "loading…");
  if (answer.error) return el("div", {class: "bad"}, answer.error);
  const now = answer.time;
  const points = series.get("service|" + service.id) || [];
  const chart = el("canvas", {class: "service-chart", width: 560, height: 90});
  requestAnimationFrame(() => draw(chart, [{values: rates(points, "packets"), color: color("--pps")},
                                           {values: rates(points, "flows"), color: color("--flows")}]));
  const head = el("tr", {}, ...["backend", "health", "reason", "since", "admin", "weight", "data plane", "pkt/s",
    "bit/s", "flows/s", "slots", ""].map((h, i) => el("th", {class: [5, 7, 8, 9, 10].includes(i) ? "num" : ""}, h)));
  const rows = answer.backends.map(b => {
    const key = "backend|" + service.id + "|" + b.address;
    const bpoints = record(key, now, {packets: b.packets, bytes: b.bytes, flows: b.new_flows});
    const admin = el("td", {}, badge(b.admin));
    if (b.admin_override) admin.append(" ", el("span", {class: "override", title: "set through the API; reset returns to the file's state"}, "api"));
    const bits = last(rates(bpoints, "bytes"));
    return el("tr", {},
      el("td", {class: "mono"}, b.address),
      el("td", {}, badge(b.health)),
      el("td", {class: "reason"}, b.reason),
      el("td", {}, ago(b.since, now)),
      admin,
      el("td", {class: "num"}, b.weight),
      el("td", {}, badge(b.dataplane, b.dataplane.split(":")[0]),
        ...(b.forwarding && b.forwarding !== "l2" ? [" ", el("span", {class: "override", title: "reached in a tunnel"}, b.forwarding)] : [])),
      el("td", {class: "num"}, si(last(rates(bpoints, "packets")), "")),
      el("td", {class: "num"}, si(bits === null ? null : bits * 8, "")),
      el("td", {class: "num"}, si(last(rates(bpoints, "flows")), "")),
      el("td", {class: "num"}, b.table_entries),
      el("td", {}, ...ACTIONS.map(action =>
        el("button", {type: "button", "data-key": b.key, "data-action": action, title: action + " " + b.key}, action))));
  });
  const first = answer.offset, end = Math.min(first + answer.backends.length, answer.total);
  const pager = el("div", {class: "pager"},
    el("button", {type: "button", "data-backends": service.id, "data-move": -1, disabled: first === 0}, "‹"),
    el("span", {class: "muted"}, (answer.total ? first + 1 : 0) + "–" + end + " of " + answer.total + " backends, not serving first"),
    el("button", {type: "button", "data-backends": service.id, "data-move": 1, disabled: end >= answer.total}, "›"));
  return el("div", {class: "detail-body"},
    el("div", {class: "detail-chart"}, el("div", {class: "muted"}, "packets/s and new flows/s of " + service.id), chart),
    el("table", {class: "backends"}, el("thead", {}, head), el("tbody", {}, ...rows)), pager);
}

function renderPeers(summary, now) {
  const body = document.querySelector("#peers tbody");
  if (!summary.peer_sessions.length) {
    body.replaceChildren(el("tr", {}, el("td", {colSpan: 5, class: "muted"}, "no BGP peers configured")));
    return;
  }
  body.replaceChildren(...summary.peer_sessions.map(p => el("tr", {},
    el("td", {class: "mono"}, p.address), el("td", {}, badge(p.state)), el("td", {}, ago(p.since, now)),
    el("td", {class: "num"}, p.routes_sent), el("td", {class: "reason"}, p.reason || ""))));
}

function renderDataplane(summary, totals) {
  const now = totals[totals.length - 1].t;
  const rows = Object.entries(summary.totals).map(([name, value]) => {
    const points = record("total|" + name, now, {value});
    return el("tr", {}, el("td", {class: "mono"}, name), el("td", {class: "num"}, si(value, "")),
      el("td", {class: "num"}, si(last(rates(points, "value")), "")));
  });
  for (const [family, entries] of Object.entries(summary.flow_table_entries)) {
    rows.push(el("tr", {}, el("td", {class: "mono"}, "flow table " + family),
      el("td", {class: "num"}, si(entries, "")),
      el("td", {class: "num muted"}, "of " + si(summary.flow_table_size, ""))));
  }
  document.querySelector("#dataplane tbody").replaceChildren(...rows);
}

function showError(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

// --- the view, and what changes it -------------------------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  view.q = params.get("q") || "";
  view.problems = params.get("problems") === "1";
  view.offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  view.open = params.getAll("open").slice(0, MAX_OPEN);
  document.getElementById("search").value = view.q;
  document.getElementById("problems").checked = view.problems;
}

function writeHash() {
  const params = new URLSearchParams();
  if (view.q) params.set("q", view.q);
  if (view.problems) params.set("problems", "1");
  if (view.offset) params.set("offset", view.offset);
  for (const id of view.open) params.append("open", id);
  history.replaceState(null, "", params.toString() ? "#" + params : location.pathname);
}

function changeView(change) {
  change();
  writeHash();
  redrawOnce = true;
  poll();
}

const CONFIRM = {
  drain: key => "Drain " + key + "? It takes no new flows; its open connections stay.",
  disable: key => "Disable " + key + "? It leaves the table and its flows move to other backends.",
};

async function admin(key, action) {
  if (CONFIRM[action] && !confirm(CONFIRM[action](key))) return;
  const url = "/api/v1/backends/" + encodeURIComponent(key) + "/" + action;
  for (let attempt = 0; attempt < 2; attempt++) {
    const response = await fetch(url, {method: "POST", headers: authHeaders()});
    if (response.status === 401 && attempt === 0) {
      tokenDeclined = false;  // a click is a fresh request for the token
      if (!askToken()) return;
      continue;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({error: "HTTP " + response.status}));
      showError(action + " " + key + ": " + body.error);
      return;
    }
    redrawOnce = true;
    poll();  // show the change now, not at the next tick
    return;
  }
}

document.addEventListener("click", event => {
  const target = event.target.closest("button, tr.service");
  if (!target) return;
  if (target.dataset.action) {
    admin(target.dataset.key, target.dataset.action).catch(error => showError(error.message));
  } else if (target.dataset.backends) {
    const id = target.dataset.backends;
    backendOffsets.set(id, Math.max(0, (backendOffsets.get(id) || 0) + Number(target.dataset.move) * BACKEND_PAGE));
    redrawOnce = true;
    poll();
  } else if (target.id === "prev" || target.id === "next") {
    changeView(() => { view.offset = Math.max(0, view.offset + (target.id === "next" ? PAGE : -PAGE)); });
  } else {
    const id = target.dataset.toggle || target.dataset.service;
    if (!id || (!target.dataset.toggle && String(window.getSelection()))) return;  // selecting text is not a click
    changeView(() => {
      view.open = view.open.includes(id) ? view.open.filter(other => other !== id) : [...view.open, id].slice(-MAX_OPEN);
    });
  }
});

let searchTimer = null;
document.getElementById("search").addEventListener("input", event => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => changeView(() => { view.q = event.target.value.trim(); view.offset = 0; }), 250);
});
document.getElementById("problems").addEventListener("change", event => {
  changeView(() => { view.problems = event.target.checked; view.offset = 0; });
});
window.addEventListener("hashchange", () => { readHash(); redrawOnce = true; poll(); });
const servicesTable = document.getElementById("services");
servicesTable.addEventListener("mouseenter", () => { pointing = true; });
servicesTable.addEventListener("mouseleave", () => { pointing = false; });

readHash();
poll();
