// The live picture. The peer lays the graph out (GET api/v1/layout, and `graph` events of
// the stream GET api/v1/live); this page only draws it, updates figures from `figures`
// events, animates dots along the edges, and shows details. Every URL is relative, so the
// page works behind a path prefix.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  const HEALTH = ["idle", "good", "warn", "bad"];
  const COLOURS = { idle: "#868e96", good: "#2f9e44", warn: "#e8890c", bad: "#e03131" };
  const PARTICLES_MAX = 1200;
  const svg = $("graph");
  const reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  const state = {
    window: $("window").value, at: null, answer: null, source: null, maxRate: 0, selected: null,
    focus: null, depth: 0, search: "", view: null, particles: [], peers: null, events: 0,
    streamAnswer: null, retry: 1000, loads: 0, expanded: new Set(),
  };
  // For tests and the curious: the state, and the timestamps of the last animation frames.
  window.__observatory = state;
  window.__frames = [];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, text, parent, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  const num = (x) => (x === 0 ? "0" : String(Number(x.toPrecision(3))));
  function rateText(r) {
    if (!(r > 0)) return "0/s";
    if (r >= 1) return num(r) + "/s";
    if (r * 60 >= 1) return num(r * 60) + "/m";
    return num(r * 3600) + "/h";
  }
  const msText = (x) => (x == null ? "–" : (x >= 100 ? String(Math.round(x)) : num(x)) + " ms");
  const pct = (x) => (x * 100).toFixed(x < 0.001 && x > 0 ? 3 : 2) + "%";
  const fit = (text, n) => (text.length <= n ? text : text.slice(0, n - 1) + "…");
  const keyOf = (e) => e.from + "\u0000" + e.to + "\u0000" + e.kind;

  // The same curves as observatory-layout's route_path: horizontal tangents at each point.
  function routePath(direction, p, bulge) {
    if (!p.length) return "";
    let d = `M${p[0][0]},${p[0][1]}`;
    const last = p[p.length - 1];
    if (direction === "loop") {
      d += ` C${p[0][0] + 36},${p[0][1] - 22} ${last[0] + 36},${last[1] + 22} ${last[0]},${last[1]}`;
    } else if (direction === "flat") {
      d += ` C${p[0][0] + bulge},${p[0][1]} ${last[0] + bulge},${last[1]} ${last[0]},${last[1]}`;
    } else {
      for (let i = 1; i < p.length; i++) {
        const a = p[i - 1], b = p[i], h = (b[0] - a[0]) / 2;
        d += ` C${a[0] + h},${a[1]} ${b[0] - h},${b[1]} ${b[0]},${b[1]}`;
      }
    }
    return d;
  }
  function middle(p, direction) {
    if (direction === "loop") return [p[1][0] + 8, p[1][1]];
    const n = p.length;
    const m = n % 2 ? p[(n - 1) / 2] : [(p[n / 2 - 1][0] + p[n / 2][0]) / 2, (p[n / 2 - 1][1] + p[n / 2][1]) / 2];
    return direction === "flat" ? [m[0] + 60, m[1]] : m;
  }
  function strokeWidth(rate) {
    if (!(rate > 0) || !(state.maxRate > 0)) return 1.5;
    return 1.5 + 7.5 * Math.min(1, Math.log1p(rate) / Math.log1p(state.maxRate));
  }
  function edgeLabel(e) {
    let text = rateText(e.rate_per_s);
    if (e.latency_ms) text += ` · p99 ${msText(e.latency_ms.p99)}`;
    if (e.error_ratio > 0) text += ` · ${pct(e.error_ratio)} err`;
    return text;
  }

  // ---- view box: fit, pan, zoom ----
  function setView(v) {
    state.view = v;
    svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
  }
  // The whole drawing, never magnified beyond its natural size (a small graph stays small).
  function fitView() {
    const b = state.answer.bounds, r = svg.getBoundingClientRect();
    const bw = b[2] - b[0], bh = b[3] - b[1];
    const scale = Math.max(bw / Math.max(r.width, 1), bh / Math.max(r.height, 1), 1);
    const w = r.width * scale, h = r.height * scale;
    setView({ x: b[0] - (w - bw) / 2, y: b[1] - (h - bh) / 2, w, h });
  }
  svg.addEventListener("wheel", (ev) => {
    if (!state.view) return;
    ev.preventDefault();
    const r = svg.getBoundingClientRect(), v = state.view;
    const f = Math.exp(Math.max(-1, Math.min(1, ev.deltaY * 0.0015)));
    const b = state.answer ? state.answer.bounds : [0, 0, 1000, 1000];
    const span = Math.max(b[2] - b[0], b[3] - b[1], 400);
    if ((f < 1 && v.w * f < 40) || (f > 1 && v.w * f > span * 20)) return;
    const px = v.x + ((ev.clientX - r.left) / r.width) * v.w, py = v.y + ((ev.clientY - r.top) / r.height) * v.h;
    setView({ x: px - (px - v.x) * f, y: py - (py - v.y) * f, w: v.w * f, h: v.h * f });
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (!state.view || ev.target.closest(".node, .hitline")) return;
    drag = { x: ev.clientX, y: ev.clientY, view: state.view };
    svg.classList.add("dragging");
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    const sx = drag.view.w / r.width, sy = drag.view.h / r.height;
    setView({ ...drag.view, x: drag.view.x - (ev.clientX - drag.x) * sx, y: drag.view.y - (ev.clientY - drag.y) * sy });
  });
  window.addEventListener("pointerup", () => { drag = null; svg.classList.remove("dragging"); });

  // ---- drawing ----
  function render(answer) {
    const first = !state.answer;
    state.answer = answer;
    state.maxRate = Math.max(state.maxRate * 0.5, ...answer.edges.map((e) => e.rate_per_s), 0);
    svg.textContent = "";
    const defs = el("defs", {}, svg);
    const colours = COLOURS;
    for (const h of HEALTH) {
      const m = el("marker", { id: "arrow-" + h, viewBox: "0 0 10 10", refX: 9, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 11, markerHeight: 11, orient: "auto-start-reverse" }, defs);
      el("path", { d: "M0,0 L10,5 L0,10 z", fill: colours[h] }, m);
    }
    const root = el("g", { id: "viewport" }, svg);
    const gEdges = el("g", {}, root), gLabels = el("g", {}, root), gNodes = el("g", {}, root);
    // Edges between the same two nodes (several kinds, or both ways) share a route: draw
    // them side by side, a few pixels apart.
    const pairs = new Map();
    for (const e of answer.edges) {
      const pair = [e.from, e.to].sort().join("\u0000");
      e._twin = (pairs.get(pair) || 0);
      pairs.set(pair, e._twin + 1);
    }
    answer.edges.forEach((e, i) => {
      const d = routePath(e.direction, e.points, 80);
      const twins = pairs.get([e.from, e.to].sort().join("\u0000"));
      const shift = twins > 1 ? (e._twin - (twins - 1) / 2) * 6 : 0;
      e._shift = shift;
      const path = el("path", {
        class: `edge ${e.kind} ${e.health}`, d, "stroke-width": strokeWidth(e.rate_per_s).toFixed(1),
        "marker-end": `url(#arrow-${e.health})`, "data-index": i, transform: `translate(0,${shift})`,
      }, gEdges);
      el("title", {}, path).textContent = `${e.from} → ${e.to} (${e.kind}${e.virtual ? `, virtual ${e.virtual}` : ""})`;
      const hit = el("path", { class: "hitline", d, "data-index": i, transform: `translate(0,${shift})` }, gEdges);
      hit.addEventListener("click", () => select(keyOf(e)));
      const [x, y] = middle(e.points, e.direction);
      const label = el("text", { class: "label", x, y: y - 6, "text-anchor": "middle", "data-index": i }, gLabels);
      label.textContent = edgeLabel(e);
      e._path = path; e._label = label; e._mid = [x, y - 6];
    });
    placeLabels(answer.edges);
    const w = answer.node_width, h = answer.node_height;
    for (const n of answer.nodes) {
      const g = el("g", { class: "node", "data-name": n.name }, gNodes);
      el("title", {}, g).textContent = n.virtual ? `${n.name} (virtual: it reports nothing itself)` : n.name;
      if (n.virtual) g.classList.add("virtual");
      const x0 = n.x - w / 2, y0 = n.y - h / 2;
      if (n.shape === "database") {
        const e = 6;
        el("path", { class: n.health, d: `M${x0},${y0 + e} a${w / 2},${e} 0 0,1 ${w},0 v${h - 2 * e} a${w / 2},${e} 0 0,1 -${w},0 z M${x0},${y0 + e} a${w / 2},${e} 0 0,0 ${w},0` }, g);
      } else {
        el("rect", { class: n.health, x: x0, y: y0, width: w, height: h, rx: 8 }, g);
      }
      if (n.members) {
        g.classList.add("group");
        el("rect", { class: n.health, x: x0 + 4, y: y0 + 4, width: w - 8, height: h - 8, rx: 6 }, g);
      }
      const name = el("text", { x: n.x, y: n.y - 2, "text-anchor": "middle" }, g);
      name.textContent = n.members ? fit(`${n.name} (${n.members})`, 24) : fit(n.name, 22);
      n._note = el("text", { class: "note", x: n.x, y: n.y + 12, "text-anchor": "middle" }, g);
      n._g = g;
      // A group opens on a click (the peer then draws its nodes); a node takes the focus.
      g.addEventListener("click", () => (n.members ? expand(n.name) : focusOn(n.name)));
    }
    updateNotes();
    if (first || !state.view) fitView();
    applyFilters();
    setupParticles();
    showCoverage(answer.coverage);
    if (state.selected && !$("detail").hidden) showDetail();
  }

  // Labels that would overlap one already placed (the busier edge wins) are left out;
  // the edge's title and detail still say everything.
  function placeLabels(edges) {
    const placed = [];
    const order = edges.map((e, i) => i).sort((a, b) => edges[b].rate_per_s - edges[a].rate_per_s);
    for (const i of order) {
      const e = edges[i];
      const w = e._label.textContent.length * 5.6, h = 13;
      const box = [e._mid[0] - w / 2, e._mid[1] - h, e._mid[0] + w / 2, e._mid[1] + 2];
      const free = placed.length < 400 && placed.every((b) => box[2] < b[0] || box[0] > b[2] || box[3] < b[1] || box[1] > b[3]);
      e._label.style.display = free ? "" : "none";
      if (free) placed.push(box);
    }
  }

  function updateNotes() {
    const into = new Map();
    for (const e of state.answer.edges) into.set(e.to, (into.get(e.to) || 0) + e.rate_per_s);
    for (const n of state.answer.nodes) n._note.textContent = into.has(n.name) ? rateText(into.get(n.name)) + " in" : "";
  }

  function applyDelta(delta) {
    const answer = state.answer;
    // Indices refer to the stream's last graph event; a drawing fetched since (Tidy) waits
    // for the stream's next graph event.
    if (!answer || answer !== state.streamAnswer) return;
    let top = 0;
    for (const [i, rate, errorRatio, p50, p99, health] of delta.edges) {
      const e = answer.edges[i];
      if (!e) continue;
      e.rate_per_s = rate; e.error_ratio = errorRatio;
      e.latency_ms = p50 == null ? null : { ...(e.latency_ms || {}), p50, p99 };
      e.health = HEALTH[health] || "idle";
      e._label.textContent = edgeLabel(e);
      e._path.setAttribute("class", `edge ${e.kind} ${e.health}`);
      e._path.setAttribute("marker-end", `url(#arrow-${e.health})`);
    }
    for (const e of answer.edges) top = Math.max(top, e.rate_per_s);
    state.maxRate = Math.max(state.maxRate * 0.98, top);
    // Only what changed is touched: a big drawing repaints less.
    for (const e of answer.edges) {
      const width = strokeWidth(e.rate_per_s).toFixed(1);
      if (e._width !== width) { e._width = width; e._path.setAttribute("stroke-width", width); }
    }
    answer.window.end = delta.end;
    if (delta.coverage) {
      answer.coverage = { ...answer.coverage, mesh: delta.coverage.mesh };
      showCoverage(answer.coverage);
    }
    updateNotes();
    if (delta.edges.length) setupParticles();
    if (state.selected) refreshDetailFigures();
  }

  // ---- dots: density follows rate against the moving maximum, speed follows latency ----
  // They are drawn on a canvas over the drawing, so that moving them never repaints the
  // SVG; each route is sampled once per drawing and the dots move between the samples.
  const canvas = $("dots");
  const ctx = canvas.getContext("2d");
  function samples(e) {
    if (e._samples) return e._samples;
    const length = e._path.getTotalLength();
    const n = Math.max(16, Math.min(96, e.points.length * 4));
    const out = new Float32Array(2 * (n + 1));
    for (let i = 0; i <= n; i++) {
      const pt = e._path.getPointAtLength((i / n) * length);
      out[2 * i] = pt.x; out[2 * i + 1] = pt.y + (e._shift || 0);
    }
    e._samples = out;
    return out;
  }
  function setupParticles() {
    state.particles = [];
    if (reduceMotion || !state.answer) return;
    const busy = state.answer.edges.filter((e) => e.rate_per_s > 0 && !e._path.classList.contains("dim"))
      .sort((a, b) => b.rate_per_s - a.rate_per_s);
    let budget = PARTICLES_MAX;
    for (const e of busy) {
      if (budget <= 0) break;
      const share = state.maxRate > 0 ? e.rate_per_s / state.maxRate : 0;
      const n = Math.min(budget, Math.max(1, Math.round(6 * Math.sqrt(share))));
      const p50 = e.latency_ms && e.latency_ms.p50 != null ? e.latency_ms.p50 : 1;
      const seconds = 0.8 + 1.8 * Math.min(1, Math.log10(1 + p50) / 3);
      const colour = COLOURS[e.health] || COLOURS.idle;
      for (let k = 0; k < n; k++) state.particles.push({ edge: e, seconds, offset: k / n, colour });
      budget -= n;
    }
  }
  function drawParticles(s) {
    const r = svg.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
    const w = Math.round(r.width * ratio), h = Math.round(r.height * ratio);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const v = state.view;
    if (!v || !state.particles.length) return;
    // The SVG's own mapping (preserveAspectRatio xMidYMid meet).
    const scale = Math.min(r.width / v.w, r.height / v.h);
    const tx = (r.width - v.w * scale) / 2 - v.x * scale, ty = (r.height - v.h * scale) / 2 - v.y * scale;
    ctx.setTransform(scale * ratio, 0, 0, scale * ratio, tx * ratio, ty * ratio);
    const byColour = new Map();
    for (const p of state.particles) {
      const pts = samples(p.edge), n = pts.length / 2 - 1;
      const f = (((s / p.seconds) + p.offset) % 1) * n, i = Math.floor(f), u = f - i;
      const x = pts[2 * i] + (pts[2 * i + 2] - pts[2 * i]) * u, y = pts[2 * i + 1] + (pts[2 * i + 3] - pts[2 * i + 1]) * u;
      let list = byColour.get(p.colour);
      if (!list) { list = []; byColour.set(p.colour, list); }
      list.push(x, y);
    }
    for (const [colour, list] of byColour) {
      ctx.fillStyle = colour;
      ctx.beginPath();
      for (let i = 0; i < list.length; i += 2) { ctx.moveTo(list[i] + 2.6, list[i + 1]); ctx.arc(list[i], list[i + 1], 2.6, 0, 2 * Math.PI); }
      ctx.fill();
    }
  }
  function frame(t) {
    const frames = window.__frames;
    frames.push(t);
    if (frames.length > 600) frames.splice(0, frames.length - 600);
    drawParticles(t / 1000);
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  // ---- search and focus ----
  function neighbourhood(name, depth) {
    const seen = new Set([name]);
    let frontier = new Set([name]);
    for (let d = 0; d < depth && frontier.size; d++) {
      const next = new Set();
      for (const e of state.answer.edges) {
        for (const [a, b] of [[e.from, e.to], [e.to, e.from]]) {
          if (frontier.has(a) && !seen.has(b)) { seen.add(b); next.add(b); }
        }
      }
      frontier = next;
    }
    return seen;
  }
  function applyFilters() {
    const answer = state.answer;
    if (!answer) return;
    const q = state.search.trim().toLowerCase();
    const shown = state.focus && state.depth > 0 ? neighbourhood(state.focus, state.depth) : null;
    for (const n of answer.nodes) {
      const hit = q && n.name.toLowerCase().includes(q);
      n._g.classList.toggle("hit", !!hit);
      n._g.classList.toggle("dim", (shown && !shown.has(n.name)) || (!!q && !hit && !shown));
    }
    for (const e of answer.edges) {
      const off = shown ? !(shown.has(e.from) && shown.has(e.to)) : !!q && !(e.from.toLowerCase().includes(q) || e.to.toLowerCase().includes(q));
      e._path.classList.toggle("dim", off);
      e._label.classList.toggle("dim", off);
    }
  }
  function expand(group) {
    state.expanded.add(group);
    $("collapse").disabled = false;
    connect();
  }
  $("collapse").addEventListener("click", () => {
    state.expanded.clear();
    $("collapse").disabled = true;
    connect();
  });
  // `?group=off` on the page's own address draws every node, however many.
  const pageGroup = new URLSearchParams(window.location.search).get("group");
  function groupParams(q) {
    if (pageGroup) q.set("group", pageGroup);
    if (state.expanded.size) q.set("expand", [...state.expanded].join(","));
    return q;
  }

  function focusOn(name) {
    state.focus = state.focus === name ? null : name;
    if (state.focus && state.depth === 0) { state.depth = 1; $("depth").value = "1"; }
    applyFilters();
    setupParticles();
  }
  $("search").addEventListener("input", (ev) => { state.search = ev.target.value; applyFilters(); setupParticles(); });
  $("search").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || !state.answer) return;
    const q = state.search.trim().toLowerCase();
    const n = state.answer.nodes.find((n) => n.name.toLowerCase().includes(q));
    if (n && state.view) setView({ ...state.view, x: n.x - state.view.w / 2, y: n.y - state.view.h / 2 });
  });
  $("depth").addEventListener("change", (ev) => { state.depth = Number(ev.target.value); applyFilters(); setupParticles(); });

  // ---- coverage and peers ----
  function showCoverage(coverage) {
    const banner = $("coverage");
    const mesh = coverage && coverage.mesh;
    const origins = coverage && coverage.origins ? coverage.origins.length : 0;
    banner.classList.remove("problem");
    if (!mesh) {
      banner.className = "banner";
      banner.textContent = `complete: a single peer (${origins} origin${origins === 1 ? "" : "s"})`;
      return;
    }
    banner.className = mesh.complete ? "banner" : "banner partial";
    let text = mesh.complete
      ? (mesh.peers_known === 0 ? "complete: no other peer known" : `complete: ${mesh.peers_in_sync} of ${mesh.peers_known} other peers in sync`)
      : `partial: ${mesh.peers_in_sync} of ${mesh.peers_known} other peers in sync, ${mesh.peers_connected} connected`;
    if (!mesh.complete && state.peers) {
      const missing = state.peers.peers.filter((p) => !p.connected || p.last_sync_age_ms == null || p.last_sync_age_ms > mesh.fresh_ms);
      if (missing.length) text += ` · missing ${missing.map((p) => p.peer.slice(-8)).join(", ")}`;
    }
    banner.textContent = text + (state.answer ? ` · up to ${state.answer.window.end}` : "");
  }
  async function loadPeers() {
    try {
      const r = await fetch("api/v1/peers");
      state.peers = r.ok ? await r.json() : null;
    } catch (_) {
      state.peers = null;
    }
    if (state.answer) showCoverage(state.answer.coverage);
    if (!$("peers").hidden) showPeers();
  }
  function showPeers() {
    const box = $("peers");
    box.textContent = "";
    const close = html("button", "×", box, "close");
    close.addEventListener("click", () => { box.hidden = true; });
    html("h2", "Peers", box);
    if (!state.peers) { html("p", "This peer runs without a mesh, or /api/v1/peers did not answer.", box); return; }
    const p = state.peers;
    html("p", `this peer ${p.peer_id} · ${p.coverage.peers_in_sync} of ${p.coverage.peers_known} in sync · picture ${p.coverage.complete ? "complete" : "partial"}`, box);
    const table = html("table", null, box);
    const head = html("tr", null, table);
    for (const t of ["peer", "connected", "last sync", "we lack", "objectives"]) html("th", t, head);
    for (const peer of p.peers) {
      const row = html("tr", null, table);
      html("td", peer.peer.slice(-12), row).title = peer.peer;
      html("td", peer.connected ? "yes" : "no", row);
      html("td", peer.last_sync_age_ms == null ? "never" : `${Math.round(peer.last_sync_age_ms / 1000)} s ago`, row);
      html("td", peer.we_lack_cells == null ? "–" : `${peer.we_lack_cells} cells`, row);
      html("td", peer.objectives_agree == null ? "–" : peer.objectives_agree ? "agree" : "differ", row);
    }
  }
  $("peers-button").addEventListener("click", () => { const box = $("peers"); box.hidden = !box.hidden; if (!box.hidden) { $("detail").hidden = true; showPeers(); } });

  // ---- edge detail ----
  function select(key) {
    state.selected = key;
    $("peers").hidden = true;
    for (const e of state.answer.edges) e._path.classList.toggle("selected", keyOf(e) === key);
    showDetail();
  }
  function selectedEdge() {
    return state.answer && state.answer.edges.find((e) => keyOf(e) === state.selected);
  }
  function stepFor(window) {
    const s = { "30s": "10s", "1m": "10s", "5m": "10s", "15m": "1m", "1h": "1m", "6h": "10m", "24h": "1h", "7d": "6h" };
    return s[window] || "1m";
  }
  function chart(parent, points, value, title, unit) {
    html("h3", title, parent);
    const W = 380, H = 90;
    const s = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart" }, parent);
    const values = points.map(value);
    const top = Math.max(...values.filter((v) => v != null), 0) || 1;
    el("line", { x1: 0, y1: H - 14, x2: W, y2: H - 14, stroke: "#dee2e6" }, s);
    const xs = (i) => (points.length < 2 ? 0 : (i / (points.length - 1)) * (W - 4) + 2);
    const ys = (v) => H - 14 - (v / top) * (H - 24);
    const d = values.map((v, i) => (v == null ? null : `${xs(i).toFixed(1)},${ys(v).toFixed(1)}`)).filter(Boolean).join(" ");
    el("polyline", { points: d, fill: "none", stroke: "#1971c2", "stroke-width": 1.5 }, s);
    values.forEach((v, i) => { if (v != null) el("circle", { cx: xs(i), cy: ys(v), r: 2, fill: "#1971c2" }, s); });
    el("text", { x: 2, y: 10, "font-size": 10, fill: "#5c636a" }, s).textContent = `max ${unit(top)}`;
    el("text", { x: 2, y: H - 2, "font-size": 10, fill: "#5c636a" }, s).textContent = points.length ? points[0].start : "";
  }
  // The merged HDR counters, grouped into bins of a third of a decade by their upper end.
  function latencyChart(parent, answer) {
    html("h3", `latency histogram (${answer.samples} calls)`, parent);
    if (!answer.counters.length) { html("p", "no call reported a latency", parent); return; }
    const bins = new Map();
    for (const c of answer.counters) {
      const bin = Math.floor(Math.log10(Math.max(c.high_ms, 0.001)) * 3);
      bins.set(bin, (bins.get(bin) || 0) + c.count);
    }
    const keys = [...bins.keys()];
    const lo = Math.min(...keys) - 1, hi = Math.max(...keys) + 1;
    const W = 380, H = 90, n = hi - lo + 1, bw = (W - 4) / n;
    const top = Math.max(...bins.values(), 1);
    const s = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", id: "latency-chart" }, parent);
    for (let b = lo; b <= hi; b++) {
      const count = bins.get(b) || 0;
      const h = (count / top) * (H - 26);
      const bar = el("rect", { x: 2 + (b - lo) * bw, y: H - 14 - h, width: Math.max(bw - 1, 1), height: h, fill: "#1971c2" }, s);
      el("title", {}, bar).textContent = `${count} calls up to ${msText(10 ** ((b + 1) / 3))}`;
    }
    el("text", { x: 2, y: H - 2, "font-size": 10, fill: "#5c636a" }, s).textContent = msText(10 ** (lo / 3));
    el("text", { x: W - 2, y: H - 2, "font-size": 10, fill: "#5c636a", "text-anchor": "end" }, s).textContent = msText(10 ** ((hi + 1) / 3));
    el("text", { x: 2, y: 10, "font-size": 10, fill: "#5c636a" }, s).textContent = `most ${top} calls in a bin`;
  }
  function figuresTable(box, e) {
    const table = html("table", null, box);
    table.id = "detail-figures";
    const l = e.latency_ms || {};
    const rows = [
      ["calls", e.calls], ["errors", `${e.errors} (${pct(e.error_ratio)})`], ["rate", rateText(e.rate_per_s)],
      ["p50", msText(l.p50)], ["p95", msText(l.p95)], ["p99", msText(l.p99)], ["max", msText(l.max)],
    ];
    for (const [k, v] of rows) { const r = html("tr", null, table); html("th", k, r); html("td", String(v), r); }
  }
  async function showDetail() {
    const e = selectedEdge();
    const box = $("detail");
    if (!e) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = "";
    const close = html("button", "×", box, "close");
    close.addEventListener("click", () => { box.hidden = true; state.selected = null; for (const x of state.answer.edges) x._path.classList.remove("selected"); });
    html("h2", `${e.from} → ${e.to}`, box).id = "detail-title";
    html("p", `${e.kind} · over the last ${state.answer.window.length}${state.at ? " to " + state.at : ""}`, box);
    const figures = html("div", null, box);
    figuresTable(figures, e);
    if (e.objectives.length) {
      html("h3", "Objectives", box);
      const list = html("ul", null, box);
      for (const o of e.objectives) html("li", `${o.name}: ${o.state}`, list, "state-" + o.state);
    }
    const series = html("div", "loading the series…", box);
    const q = new URLSearchParams({ window: state.window, step: stepFor(state.window), kind: e.kind });
    if (state.at) q.set("at", state.at);
    try {
      const r = await fetch(`api/v1/edges/${encodeURIComponent(e.from)}/${encodeURIComponent(e.to)}?${q}`);
      const body = await r.json();
      series.textContent = "";
      if (!r.ok) { html("p", body.error || body.message || `the series: HTTP ${r.status}`, series); return; }
      chart(series, body.points, (p) => p.rate_per_s, "calls per second", rateText);
      chart(series, body.points, (p) => (p.latency_ms ? p.latency_ms.p99 : null), "p99 latency", msText);
      const l = new URLSearchParams({ window: state.window, kind: e.kind });
      if (state.at) l.set("at", state.at);
      const lr = await fetch(`api/v1/edges/${encodeURIComponent(e.from)}/${encodeURIComponent(e.to)}/latency?${l}`);
      const latency = await lr.json();
      if (lr.ok) latencyChart(series, latency);
      else html("p", latency.error || latency.message || `the histogram: HTTP ${lr.status}`, series);
    } catch (err) {
      series.textContent = "the series could not be read: " + err;
    }
  }
  async function refreshDetailFigures() {
    const box = document.getElementById("detail-figures");
    const e = selectedEdge();
    if (!box || !e) return;
    box.remove();
    const holder = document.createElement("div");
    figuresTable(holder, e);
    const title = document.getElementById("detail-title");
    title.nextSibling.after(holder.firstChild);
  }

  // ---- data: a live stream, or one drawing at a past time ----
  function problem(text) {
    const banner = $("coverage");
    banner.className = "banner problem";
    banner.textContent = text;
  }
  function connect() {
    state.loads++;
    if (state.source) { state.source.close(); state.source = null; }
    if (state.at) { loadOnce(false); return; }
    const source = new EventSource(`api/v1/live?${groupParams(new URLSearchParams({ window: state.window }))}`);
    state.source = source;
    source.addEventListener("graph", (ev) => {
      state.events++;
      state.retry = 1000;
      const answer = JSON.parse(ev.data);
      state.streamAnswer = answer;
      render(answer);
    });
    source.addEventListener("figures", (ev) => { state.events++; applyDelta(JSON.parse(ev.data)); });
    source.addEventListener("problem", (ev) => problem(ev.data));
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (503 when too many streams are open, 400, a proxy error): the browser
        // gives up, so try again later, waiting longer each time.
        const wait = state.retry || 1000;
        state.retry = Math.min(wait * 2, 30000);
        problem(`the live stream was refused; trying again in ${Math.round(wait / 1000)} s`);
        setTimeout(() => { if (state.source === source) connect(); }, wait);
      } else if (source.readyState !== EventSource.OPEN) {
        problem("connection to the peer lost; retrying…");
      }
    };
  }
  async function loadOnce(fresh) {
    const ticket = ++state.loads;
    const q = new URLSearchParams({ window: state.window });
    if (state.at) q.set("at", state.at);
    if (fresh) q.set("fresh", "true");
    groupParams(q);
    try {
      const r = await fetch(`api/v1/layout?${q}`);
      const body = await r.json();
      // A newer request (another window, time or Tidy) answers for the page.
      if (ticket !== state.loads) return;
      if (!r.ok) { problem(body.error || body.message || `HTTP ${r.status}`); return; }
      render(body);
    } catch (err) {
      problem("the peer did not answer: " + err);
    }
  }
  $("window").addEventListener("change", (ev) => { state.window = ev.target.value; state.view = null; connect(); });
  let timeTimer = null;
  $("time").addEventListener("input", (ev) => {
    const minutes = Number(ev.target.value);
    state.at = minutes === 0 ? null : new Date(Date.now() + minutes * 60000).toISOString().replace(/\.\d+Z$/, "Z");
    $("time-label").textContent = minutes === 0 ? "live" : `${minutes} min (${state.at})`;
    clearTimeout(timeTimer);
    timeTimer = setTimeout(connect, 250);
  });
  $("tidy").addEventListener("click", () => { state.view = null; loadOnce(true); });

  connect();
  loadPeers();
  setInterval(loadPeers, 5000);
})();
