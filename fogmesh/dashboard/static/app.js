// fogmesh dashboard: one EventSource in, DOM and canvases out. No library, no
// build step. Everything shown comes from the broker (agents' payloads too),
// so text goes in through textContent only, never innerHTML.
"use strict";

(function () {
  const state = {
    points: [],          // chart window: at most `maxPoints`, oldest dropped
    maxPoints: 600,
    controls: false,
    lastTick: null,
    ticks: 0,
    renderMs: [],        // how long the last renders took (the bench reads it)
    seenEvents: 0,
  };
  const palette = ["#2f6fdb", "#1f9d55", "#d64545", "#d9a400", "#9a4fd1", "#0f9bb5", "#e46f1f",
                   "#5a6470", "#b83280", "#2c7a7b"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return node;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const fmt = (v, digits = 0) => (v === null || v === undefined) ? "-" : Number(v).toFixed(digits);
  function colour(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return palette[h % palette.length];
  }

  // -- tables ---------------------------------------------------------------------
  function badge(text) { return el("span", {class: "badge " + text}, text); }

  // Rows are kept by key and rebuilt only when what they show changed: a
  // fleet of 50 agents updated every second must not churn thousands of nodes.
  function syncRows(body, items, keyOf, build, signatureOf = JSON.stringify) {
    const old = new Map();
    for (const tr of body.children) old.set(tr.dataset.key, tr);
    const rows = items.map(item => {
      const key = keyOf(item), sig = signatureOf(item), tr = old.get(key);
      if (tr && tr.fogmeshSig === sig) return tr;
      const fresh = build(item);
      fresh.dataset.key = key;
      fresh.fogmeshSig = sig;
      return fresh;
    });
    if (rows.length !== body.children.length || rows.some((r, i) => body.children[i] !== r)) body.replaceChildren(...rows);
    return rows;
  }

  function renderAgents(agents) {
    const body = document.querySelector("#agents tbody");
    const rows = syncRows(body, agents, a => a.agent, a => el("tr", {"data-agent": a.agent, "data-state": a.state},
      el("td", {class: "text"}, a.agent),
      el("td", {class: "text state", title: a.reason || ""}, badge(a.state)),
      el("td", {}, fmt(a.cpu)), el("td", {}, fmt(a.mem)), el("td", {class: "queue"}, String(a.queue)),
      el("td", {}, `${a.running}/${a.capacity}`),
      el("td", {class: "battery"}, a.battery === null ? "mains"
        : el("meter", {min: 0, max: 100, low: 20, high: 50, optimum: 100, value: a.battery,
                       title: fmt(a.battery) + " %"}), a.battery === null ? "" : " " + fmt(a.battery)),
      el("td", {}, fmt(a.tasks_per_s, 1)), el("td", {class: "done"}, String(a.done)),
      el("td", {class: "offloaded"}, String(a.offloaded)),
      el("td", {class: "kinds"}, (a.kinds || []).join(" ")),
      el("td", {class: "seen"}, "")), a => JSON.stringify({...a, age_s: 0}));
    agents.forEach((a, i) => {                 // "seen" changes every second: one text node, not a row
      const cell = rows[i].lastChild, text = fmt(a.age_s, 1) + " s";
      if (cell.textContent !== text) cell.textContent = text;
    });
    const live = agents.filter(a => a.state !== "offline" && a.state !== "revoked").length;
    document.getElementById("agents-count").textContent = `${live} live of ${agents.length}`;
  }

  function renderBridges(bridges) {
    syncRows(document.querySelector("#bridges tbody"), bridges, b => b.site, b =>
      el("tr", {"data-site": b.site},
        el("td", {class: "text"}, b.site), el("td", {class: "text", title: b.reason || ""}, badge(b.state || "?")),
        el("td", {class: "text"}, badge(b.link || "?")), el("td", {}, fmt(b.backlog)),
        el("td", {}, fmt(b.oldest_s, 1)), el("td", {}, fmt(b.cloud_workers))));
  }

  function renderDeployments(deployments) {
    syncRows(document.querySelector("#deployments tbody"), deployments, d => d.agent, d =>
      el("tr", {"data-agent": d.agent},
        el("td", {class: "text"}, d.agent),
        el("td", {class: "text"}, badge(d.state || "?"),
           d.state === "downloading" && d.progress != null ? ` ${Math.round(100 * d.progress)}%` : ""),
        el("td", {}, fmt(d.desired_serial)), el("td", {}, fmt(d.applied_serial)),
        el("td", {class: "text"}, d.bundles || "-"),
        el("td", {class: "text", title: d.detail || ""}, d.reason || "")));
  }

  function renderPipelines(pipes) {
    syncRows(document.querySelector("#pipelines tbody"), pipes, p => p.pipeline, p =>
      el("tr", {"data-pipeline": p.pipeline},
        el("td", {class: "text"}, p.pipeline), el("td", {}, fmt(p.frames)), el("td", {}, fmt(p.processed)),
        el("td", {}, fmt(p.skipped)), el("td", {class: "text decision"}, p.last_decision || "-"),
        el("td", {}, fmt(p.last_decision_ms)), el("td", {}, fmt(p.actuations)),
        el("td", {}, fmt(p.last_latency_ms))));
  }

  async function drive(device, actuator, op, ms) {
    const body = op === "pulse" ? {op, ms} : {op};
    const r = await fetch(`/api/actuators/${encodeURIComponent(device)}/${encodeURIComponent(actuator)}`,
                          {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    if (!r.ok) {
      const answer = await r.json().catch(() => ({}));
      alert(`${device}/${actuator} ${op}: ${answer.error || r.status}`);
    }
  }

  function renderActuators(actuators) {
    document.querySelector("#actuators th.ctl").hidden = !state.controls;
    syncRows(document.querySelector("#actuators tbody"), actuators, a => `${a.device}/${a.actuator}`, a => {
      const row = el("tr", {"data-actuator": `${a.device}/${a.actuator}`},
        el("td", {class: "text"}, a.device), el("td", {class: "text"}, a.actuator),
        el("td", {class: "text state"}, badge(a.state)));
      if (state.controls) {
        const cell = el("td", {class: "text"});
        for (const op of ["on", "off", "pulse"]) {
          const b = el("button", {type: "button", "data-op": op}, op === "pulse" ? "pulse 1 s" : op);
          b.addEventListener("click", () => drive(a.device, a.actuator, op, 1000));
          cell.append(b);
        }
        row.append(cell);
      }
      return row;
    }, a => `${a.state} ${state.controls}`);
  }

  function renderEvents(events) {
    const list = document.getElementById("events");
    if (!events.length) { list.replaceChildren(el("li", {class: "note"}, "none yet")); return; }
    if (events[0].seq === state.seenEvents) return;
    state.seenEvents = events[0].seq;
    list.replaceChildren(...events.map(e => el("li", {"data-kind": e.kind, "data-code": e.code || ""},
      el("span", {class: "when"}, new Date(e.ts * 1000).toLocaleTimeString() + " "),
      el("b", {}, e.kind), " ", el("span", {class: "code"}, e.code || "?"),
      ` task ${e.task ?? "(no id)"}` + (e.agent ? ` from ${e.agent}` : "") + ": " + (e.message || ""))));
  }

  function renderAudit(audit) {
    const list = document.getElementById("audit");
    const sig = JSON.stringify(audit[0] || null) + audit.length;
    if (sig === state.seenAudit) return;
    state.seenAudit = sig;
    if (!audit.length) { list.replaceChildren(el("li", {class: "note"}, "none yet")); return; }
    list.replaceChildren(...audit.map(a => el("li", {"data-who": a.who, "data-status": a.status,
                                                     "data-actuator": `${a.device}/${a.actuator}`},
      el("span", {class: "when"}, (a.ts ? new Date(a.ts * 1000).toLocaleTimeString() : "?") + " "),
      el("b", {}, a.who), ` (${a.role}, ${a.from}) ${a.op}${a.op === "pulse" ? " " + a.ms + " ms" : ""} `,
      `${a.device}/${a.actuator}: `, el("span", {class: "status"}, a.status),
      a.state ? ` (now ${a.state})` : "", a.message ? ` ${a.message}` : "")));
  }

  // -- the site as a picture ---------------------------------------------------------
  function renderSite(flows, agents, bridges) {
    const s = document.getElementById("site");
    const sig = JSON.stringify([flows, agents.slice(0, 12).map(a => [a.agent, a.state, a.tasks_per_s]),
                                agents.length, bridges.slice(0, 1)]);
    if (s.fogmeshSig === sig) return;
    s.fogmeshSig = sig;
    const nodes = [];
    const live = agents.slice(0, 12);
    const rows = Math.max(live.length, 1);
    const agentY = i => 20 + (i + 0.5) * (220 / rows);
    const box = (x, y, w, h, label, cls, sub) => {
      nodes.push(svg("rect", {x, y, width: w, height: h, rx: 6, class: "node " + (cls || "")}));
      nodes.push(svg("text", {x: x + w / 2, y: y + h / 2 - (sub ? 3 : -4), "text-anchor": "middle"}, label));
      if (sub) nodes.push(svg("text", {x: x + w / 2, y: y + h / 2 + 13, "text-anchor": "middle", class: "flow"}, sub));
    };
    const edge = (x1, y1, x2, y2, label, busy) => {
      nodes.push(svg("path", {d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`,
                              class: "edge" + (busy ? " busy" : "")}));
      if (label) nodes.push(svg("text", {x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5, "text-anchor": "middle", class: "flow"}, label));
    };
    box(10, 105, 120, 50, flows.devices === 1 ? "1 device" : `${flows.devices} devices`, "", "");
    box(230, 105, 130, 50, "edge broker", "", "");
    edge(130, 130, 230, 130, `${fmt(flows.tasks_per_s, 1)} tasks/s`, flows.tasks_per_s > 0);
    const bridge = bridges[0];
    live.forEach((a, i) => {
      const y = agentY(i);
      const h = Math.min(40, 200 / rows);
      box(470, y - h / 2, 150, h, a.agent, a.state, rows <= 6 ? `${fmt(a.tasks_per_s, 1)}/s` : "");
      edge(360, 130, 470, y, "", (a.tasks_per_s || 0) > 0);
      if (bridge) edge(620, y, 720, 130, "", flows.cloud_per_s > 0);
    });
    if (agents.length > live.length) {
      nodes.push(svg("text", {x: 545, y: 255, "text-anchor": "middle", class: "flow"}, `+${agents.length - live.length} more`));
    }
    nodes.push(svg("text", {x: 545, y: 14, "text-anchor": "middle", class: "flow"},
                   `offloads between agents ${fmt(flows.offloads_per_s, 1)}/s`));
    box(720, 105, 120, 50, bridge ? `bridge ${bridge.site}` : "no bridge", bridge ? (bridge.link === "up" ? "" : "offline") : "stale",
        bridge ? `backlog ${fmt(flows.backlog)}` : "");
    nodes.push(svg("text", {x: 670, y: 95, "text-anchor": "middle", class: "flow"}, `${fmt(flows.cloud_per_s, 1)} to cloud/s`));
    box(880, 105, 110, 50, "cloud", bridge && bridge.link === "up" ? "" : "stale", `${flows.cloud_workers} workers`);
    edge(840, 130, 880, 130, "", bridge && bridge.link === "up");
    s.replaceChildren(...nodes);
  }

  // -- charts: a canvas each, redrawn from the window -----------------------------------
  function drawChart(id, series, {min = 0, max = null, unit = ""} = {}) {
    const c = document.getElementById(id);
    const g = c.getContext("2d");
    const W = c.width, H = c.height, left = 44, bottom = 18, top = 8, right = 8;
    g.clearRect(0, 0, W, H);
    let hi = max;
    if (hi === null) {
      hi = 1;
      for (const s of series) for (const v of s.values) if (v !== null && v > hi) hi = v;
      hi *= 1.1;
    }
    g.strokeStyle = "#e2e5ea"; g.fillStyle = "#6b7480"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (H - top - bottom) * i / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(W - right, y); g.stroke();
      g.fillText(fmt(hi - (hi - min) * i / 4, hi < 10 ? 1 : 0) + unit, 2, y + 4);
    }
    const n = state.maxPoints;
    const x = i => left + (W - left - right) * i / (n - 1);
    const y = v => top + (H - top - bottom) * (1 - (v - min) / (hi - min || 1));
    const minutes = Math.round(n * state.tickS / 60);
    g.fillText(`last ${minutes} min`, left, H - 4);
    let lx = W - right - 4;
    g.lineWidth = 1.5;
    for (const s of series) {
      const offset = n - s.values.length;
      g.strokeStyle = s.colour;
      g.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        if (pen) g.lineTo(x(offset + i), y(v)); else { g.moveTo(x(offset + i), y(v)); pen = true; }
      });
      g.stroke();
    }
    if (series.length <= 8) {
      g.textAlign = "right";
      for (const s of series.slice().reverse()) {
        g.fillStyle = s.colour; g.fillText(s.name, lx, H - 4); lx -= g.measureText(s.name).width + 10;
      }
      g.textAlign = "left";
    }
  }

  function renderCharts() {
    const p = state.points;
    drawChart("chart-rate", [
      {name: "tasks in", colour: palette[0], values: p.map(q => q.tasks_per_s)},
      {name: "replies", colour: palette[1], values: p.map(q => q.replies_per_s)},
      {name: "errors", colour: palette[2], values: p.map(q => q.errors_per_s)}]);
    drawChart("chart-latency", [
      {name: "p50", colour: palette[0], values: p.map(q => q.p50_ms)},
      {name: "p99", colour: palette[2], values: p.map(q => q.p99_ms)}], {unit: ""});
    const names = new Set();
    for (const q of p) for (const k in q.battery) names.add(k);
    drawChart("chart-battery", [...names].sort().map(name =>
      ({name, colour: colour(name), values: p.map(q => q.battery[name] ?? null)})), {max: 100});
    drawChart("chart-backlog", [{name: "backlog", colour: palette[6], values: p.map(q => q.backlog)}]);
  }

  // -- the stream ---------------------------------------------------------------------
  function onHello(h) {
    state.maxPoints = h.points;
    state.tickS = h.tick_s;
    state.points = h.history.slice(-h.points);
    state.controls = h.controls;
    document.getElementById("broker").textContent = `${h.broker}  root ${h.root}`;
    const c = document.getElementById("controls");
    c.textContent = h.controls ? "actuator buttons on" : "read-only";
    c.title = h.controls_why;
    c.className = "badge " + (h.controls ? "on" : "");
    document.getElementById("actuators-note").textContent = h.controls ? "" : `Buttons off: ${h.controls_why}.`;
    const logout = document.getElementById("logout");
    logout.hidden = !h.user;
    document.getElementById("who").textContent = h.user ? `${h.user} (${h.role})` : "";
  }

  function onTick(t) {
    const started = performance.now();
    state.points.push(t.point);
    if (state.points.length > state.maxPoints) state.points.splice(0, state.points.length - state.maxPoints);
    state.lastTick = t;
    state.ticks += 1;
    const link = document.getElementById("link");
    link.textContent = t.connected ? "broker connected" : "broker unreachable";
    link.className = "badge " + (t.connected ? "on" : "off");
    renderAgents(t.agents);
    renderBridges(t.bridges);
    renderPipelines(t.pipelines);
    renderDeployments(t.deployments || []);
    renderActuators(t.actuators);
    renderEvents(t.events);
    renderAudit(t.audit || []);
    renderSite(t.flows, t.agents, t.bridges);
    renderCharts();
    state.renderMs.push(performance.now() - started);
    if (state.renderMs.length > 120) state.renderMs.shift();
  }

  const source = new EventSource("/events");
  source.addEventListener("hello", e => onHello(JSON.parse(e.data)));
  source.addEventListener("tick", e => onTick(JSON.parse(e.data)));
  source.onerror = async () => {
    // A session that ran out (or a logout in another tab): back to the login page.
    const r = await fetch("/api/hello").catch(() => null);
    if (r && r.status === 401) { window.location.assign("/login"); return; }
    const link = document.getElementById("link");
    link.textContent = "dashboard unreachable"; link.className = "badge off";
  };

  // The longest stretch the page's main thread was busy since the last look
  // (a click waits at most this long).
  let longestTaskMs = 0;
  try {
    new PerformanceObserver(list => {
      for (const e of list.getEntries()) longestTaskMs = Math.max(longestTaskMs, e.duration);
    }).observe({type: "longtask", buffered: false});
  } catch (e) { /* a browser without long-task timing */ }

  // For tests and the bench: what the page holds, without reaching into the DOM.
  window.fogmeshDashboard = {
    stats: () => ({ticks: state.ticks, points: state.points.length, maxPoints: state.maxPoints,
                   renderMs: state.renderMs.slice(), lastTick: state.lastTick}),
    takeLongestTaskMs: () => { const v = longestTaskMs; longestTaskMs = 0; return v; },
    forgetRenderTimes: () => { state.renderMs = []; },
    recent: n => state.points.slice(-n),
  };
})();
