// interp dashboard. Every piece of text from the database goes in through
// textContent or an SVG text node: never innerHTML, so data cannot become markup.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899",
  "#14b8a6", "#84cc16", "#f97316", "#6366f1"];
const SVG = "http://www.w3.org/2000/svg";
let workflow = null;

function $(sel) { return document.querySelector(sel); }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

// The same formatting as interp status (interpreter/monitor.py).
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  seconds = Math.round(seconds);
  if (seconds <= 0) return "-";
  const pad = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + pad(seconds % 60) + "s";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + pad(Math.floor(seconds % 3600 / 60)) + "m";
  return Math.floor(seconds / 86400) + "d" + pad(Math.floor(seconds % 86400 / 3600)) + "h";
}

function pct(x) { return x === null || x === undefined ? "?" : (100 * x).toFixed(0) + "%"; }

function fillRows(tbody, rows) {
  tbody.replaceChildren();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(el("td", c));
    tbody.appendChild(tr);
  }
}

async function getJSON(url) {
  const resp = await fetch(url, {cache: "no-store"});
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function renderSteps(data) {
  const tbody = $("#steps tbody");
  tbody.replaceChildren();
  const width = Math.max(2, ...data.steps.map((s) => String(s.step).length));
  for (const s of data.steps) {
    const tr = document.createElement("tr");
    tr.dataset.step = String(s.step);
    tr.appendChild(el("td", "Step " + String(s.step).padStart(width, "\u00a0"), "step"));
    tr.appendChild(el("td", s.name, "name"));
    tr.appendChild(el("td", s.done, "done num"));
    tr.appendChild(el("td", s.reached, "total num"));
    const barCell = el("td", null, "progress");
    const outer = el("div", null, "bar");
    const inner = el("div", null, "fill");
    inner.style.width = (s.reached > 0 ? Math.min(100, 100 * s.done / s.reached) : 0) + "%";
    outer.appendChild(inner);
    barCell.appendChild(outer);
    tr.appendChild(barCell);
    tr.appendChild(el("td", s.reached > 0 ? Math.floor(100 * s.done / s.reached) + "%" : "-", "pct num"));
    tr.appendChild(el("td", Number(s.velocity_per_min).toFixed(1) + "/min", "velocity num"));
    tr.appendChild(el("td", duration(s.eta_s), "eta num"));
    tr.appendChild(el("td", s.state, "state state-" + s.state.split(" ")[0]));
    tbody.appendChild(tr);
  }
}

function renderTotals(data) {
  for (const dd of document.querySelectorAll("#totals dd")) {
    const key = dd.dataset.key;
    const v = data.totals[key];
    dd.textContent = key === "eta_s" ? duration(v)
      : key === "completion_per_min" ? Number(v).toFixed(1) : String(v);
  }
}

function renderAlerts(data) {
  const ul = $("#alerts");
  ul.replaceChildren(...data.alerts.map((a) => el("li", a)));
  const health = $("#health");
  health.textContent = data.healthy ? "healthy" : "needs attention";
  health.className = "badge " + (data.healthy ? "ok" : "bad");
}

function renderLane(data) {
  const lane = data.model_lane;
  $("#lane-model").textContent = lane.loaded_model || "none";
  $("#lane-duty").textContent = pct(lane.duty_cycle);
  $("#lane-switches").textContent = String(lane.switches);
  fillRows($("#lanes tbody"), lane.lanes.map((l) => [l.run_id, l.worker_id, l.status,
    l.loaded_model || "", pct(l.duty_cycle), duration(l.busy_ms / 1000),
    duration(l.wall_ms / 1000), l.switches, Math.round(l.load_ms)]));
  fillRows($("#events tbody"), lane.events.map((e) => [e.at, e.run_id, e.event,
    e.from_model || "", e.model, e.duration_ms === null ? "" : Math.round(e.duration_ms)]));
  fillRows($("#breakers tbody"), data.breakers.map((b) => [b.actor, b.state,
    b.consecutive_failures, b.opened_at || "", b.last_error || ""]));
}

function renderChart(series) {
  const chart = $("#chart");
  chart.replaceChildren();
  const legend = $("#legend");
  legend.replaceChildren();
  const W = 800, H = 220, L = 40, B = 20, T = 10;
  const n = series.minutes.length;
  const max = Math.max(1, ...series.steps.flatMap((s) => s.counts));
  chart.appendChild(svg("line", {x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#999"}));
  chart.appendChild(svg("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  const label = svg("text", {x: 2, y: T + 10, "font-size": 11});
  label.textContent = String(max);
  chart.appendChild(label);
  const zero = svg("text", {x: 2, y: H - B, "font-size": 11});
  zero.textContent = "0";
  chart.appendChild(zero);
  const x = (i) => L + (n > 1 ? i * (W - L - 5) / (n - 1) : 0);
  const y = (v) => H - B - v * (H - B - T) / max;
  series.steps.forEach((s, k) => {
    if (!s.counts.some((c) => c > 0)) return;
    const color = COLORS[k % COLORS.length];
    const points = s.counts.map((c, i) => x(i).toFixed(1) + "," + y(c).toFixed(1)).join(" ");
    const line = svg("polyline", {points, fill: "none", stroke: color, "stroke-width": 1.5});
    line.dataset.step = String(s.step);
    const title = svg("title");
    title.textContent = "Step " + s.step + ": " + s.name;
    line.appendChild(title);
    chart.appendChild(line);
    const li = el("li");
    const sw = el("span", null, "swatch");
    sw.style.background = color;
    li.appendChild(sw);
    li.appendChild(document.createTextNode("Step " + s.step + " " + s.name));
    legend.appendChild(li);
  });
}

async function loadWorkflows() {
  const data = await getJSON("/api/workflows");
  const select = $("#workflow");
  select.replaceChildren();
  for (const w of data.workflows) {
    const opt = el("option", w.workflow_id + " · " + w.name);
    opt.value = String(w.workflow_id);
    select.appendChild(opt);
  }
  const fromUrl = new URLSearchParams(location.search).get("workflow");
  workflow = fromUrl || (data.default !== null ? String(data.default)
    : (data.workflows[0] ? String(data.workflows[0].workflow_id) : null));
  if (workflow !== null) select.value = workflow;
  select.addEventListener("change", () => {
    workflow = select.value;
    history.replaceState(null, "", "?workflow=" + encodeURIComponent(workflow));
    refresh();
  });
}

async function refresh() {
  if (workflow === null) { $("#updated").textContent = "no workflow"; return; }
  const q = "?workflow=" + encodeURIComponent(workflow);
  try {
    const [data, series] = await Promise.all([getJSON("/api/status" + q),
      getJSON("/api/velocity" + q)]);
    $("#wf-title").textContent = data.workflow.id + " · " + data.workflow.name
      + (data.workflow.paused ? " · PAUSED" : "");
    renderSteps(data);
    renderTotals(data);
    renderAlerts(data);
    renderLane(data);
    renderChart(series);
    $("#updated").textContent = "updated " + data.generated_at;
    document.body.dataset.generatedAt = data.generated_at;
    $("#error").hidden = true;
  } catch (err) {
    const e = $("#error");
    e.textContent = String(err.message || err);
    e.hidden = false;
  }
}

async function main() {
  try { await loadWorkflows(); } catch (err) {
    $("#error").textContent = String(err.message || err);
    $("#error").hidden = false;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

main();
