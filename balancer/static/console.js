// xdplb console: polls /api/v1/status every 2 s and renders it; rates come from the last two polls.
// Everything is built with textContent (never innerHTML), so names and reasons cannot inject markup.
"use strict";

const POLL_MS = 2000;
let previous = null; // {time, counters: Map(key -> {packets, bytes, new_flows})}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
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
    if (Math.abs(value) >= size) return (value / size).toFixed(1) + " " + prefix + unit;
  }
  return (Math.round(value * 10) / 10) + (unit ? " " + unit : "");
}

function ago(epoch, now) {
  if (!epoch) return "–";
  let s = Math.max(0, Math.round(now - epoch));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function serviceKey(s) { return [s.name, s.vip, s.port, s.protocol].join("|"); }

function counters(status) {
  const map = new Map();
  for (const s of status.services) {
    map.set(serviceKey(s), s);
    for (const b of s.backends) map.set(serviceKey(s) + "|" + b.address, b);
  }
  for (const [name, value] of Object.entries(status.totals)) map.set("total|" + name, {packets: value});
  return map;
}

function rate(key, field, current, now) {
  if (!previous || now <= previous.time) return null;
  const before = previous.counters.get(key);
  if (!before || before[field] === undefined || current[field] < before[field]) return null; // restart or new
  return (current[field] - before[field]) / (now - previous.time);
}

function renderVips(status) {
  const box = document.getElementById("vips");
  box.replaceChildren(...status.vips.map(v => el("div", {class: "card " + (v.announced ? "ok" : "bad")},
    el("div", {}, el("span", {class: "vip"}, v.prefix), " ", badge(v.announced ? "announced" : "withdrawn")),
    el("div", {class: "muted"}, v.reason),
    el("div", {class: "muted"}, v.services.join(", ")))));
}

const NUMERIC = new Set([5, 7, 8, 9, 10]);
const ACTIONS = [["drain", "drain"], ["enable", "enable"], ["disable", "disable"], ["reset", "reset"]];

function renderServices(status, now) {
  const box = document.getElementById("services");
  box.replaceChildren(...status.services.map(s => {
    const key = serviceKey(s);
    const head = el("tr", {}, ...["backend", "health", "reason", "since", "admin", "weight", "data plane",
      "pkt/s", "bit/s", "flows/s", "slots", ""].map((h, i) => el("th", {class: NUMERIC.has(i) ? "num" : ""}, h)));
    const rows = s.backends.map(b => {
      const bkey = key + "|" + b.address;
      const admin = el("td", {}, badge(b.admin));
      if (b.admin_override) admin.append(" ", el("span", {class: "override", title: "set through the API; reset returns to the file's state"}, "api"));
      const buttons = el("td", {}, ...ACTIONS.map(([action, label]) =>
        el("button", {type: "button", "data-key": b.key, "data-action": action, title: action + " " + b.key}, label)));
      const bits = rate(bkey, "bytes", b, now);
      return el("tr", {},
        el("td", {class: "mono"}, b.address),
        el("td", {}, badge(b.health)),
        el("td", {class: "reason"}, b.reason),
        el("td", {}, ago(b.since, now)),
        admin,
        el("td", {class: "num"}, b.weight),
        el("td", {}, badge(b.dataplane, b.dataplane.split(":")[0]),
          ...(b.forwarding && b.forwarding !== "l2" ? [" ", el("span", {class: "override", title: "reached in a tunnel"}, b.forwarding)] : [])),
        el("td", {class: "num"}, si(rate(bkey, "packets", b, now), "")),
        el("td", {class: "num"}, si(bits === null ? null : bits * 8, "")),
        el("td", {class: "num"}, si(rate(bkey, "new_flows", b, now), "")),
        el("td", {class: "num"}, b.table_entries),
        buttons);
    });
    const where = (s.vip.includes(":") ? "[" + s.vip + "]" : s.vip) + ":" + s.port + "/" + s.protocol;
    const title = el("div", {class: "title"},
      el("span", {class: "name"}, s.name),
      s.name === where ? null : el("span", {class: "mono"}, where),
      badge(s.up ? "up" : "down"),
      el("span", {}, s.healthy + " of " + s.backends.length + " backends take flows (need " + s.need + ")"),
      el("span", {class: "muted"}, si(rate(key, "packets", s, now), "pkt/s") + " · " +
        si(rate(key, "new_flows", s, now), "flows/s") + " · no-backend drops " + s.drop_no_backend));
    return el("div", {class: "service"}, title,
      el("table", {class: "backends"}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }));
}

function renderPeers(status, now) {
  const body = document.querySelector("#peers tbody");
  if (!status.peers.length) {
    body.replaceChildren(el("tr", {}, el("td", {colSpan: 5, class: "muted"}, "no BGP peers configured")));
    return;
  }
  body.replaceChildren(...status.peers.map(p => el("tr", {},
    el("td", {class: "mono"}, p.address), el("td", {}, badge(p.state)), el("td", {}, ago(p.since, now)),
    el("td", {class: "num"}, p.routes_sent), el("td", {class: "reason"}, p.reason || ""))));
}

function renderDataplane(status, now) {
  const body = document.querySelector("#dataplane tbody");
  const rows = Object.entries(status.totals).map(([name, value]) => el("tr", {},
    el("td", {class: "mono"}, name), el("td", {class: "num"}, si(value, "")),
    el("td", {class: "num"}, si(rate("total|" + name, "packets", {packets: value}, now), ""))));
  for (const [family, entries] of Object.entries(status.flow_table_entries)) {
    rows.push(el("tr", {}, el("td", {class: "mono"}, "flow table " + family),
      el("td", {class: "num"}, si(entries, "")),
      el("td", {class: "num muted"}, "of " + si(status.flow_table_size, ""))));
  }
  body.replaceChildren(...rows);
}

function render(status) {
  const now = status.time;
  const uptime = ago(status.started_at, now).replace(" ago", "");
  document.getElementById("daemon").textContent = "v" + status.version + " · " +
    (status.ready ? "ready" : "starting") + " · up " + uptime + " · config " + status.config_digest.slice(0, 12) +
    " · " + Object.entries(status.interfaces).map(([i, m]) => i + " (" + m + ")").join(", ");
  document.getElementById("updated").textContent = "updated " + new Date(now * 1000).toLocaleTimeString();
  renderVips(status);
  renderServices(status, now);
  renderPeers(status, now);
  renderDataplane(status, now);
  previous = {time: now, counters: counters(status)};
}

function showError(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

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

async function poll() {
  try {
    const get = () => fetch("/api/v1/status", {cache: "no-store", headers: authHeaders()});
    let response = await get();
    if (response.status === 401 && askToken()) response = await get();
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    showError("");
  } catch (error) {
    showError("API unreachable: " + error.message + " (retrying)");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function admin(key, action) {
  if (action === "disable" && !confirm("Disable " + key + "? Its flows move to other backends.")) return;
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
    }
    return;
  }
}

document.addEventListener("click", event => {
  const button = event.target.closest("button[data-action]");
  if (button) admin(button.dataset.key, button.dataset.action).catch(error => showError(error.message));
});

poll();
