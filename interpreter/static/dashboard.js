// interp dashboard. Every piece of text from the database goes in through
// textContent or an SVG text node: never innerHTML, so data cannot become markup.
"use strict";

const REFRESH_MS = 2000;
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

// The one rounding rule of interp status, interp run and this page
// (interpreter/ops/figures.py): the exact value of the double, a tie rounded away
// from zero. toFixed does exactly that; Python's own round() rounds a tie to even.
function roundHalfUp(x, digits) { return Number(x).toFixed(digits || 0); }

// The same formatting as interp status (interpreter/ops/status.py).
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  seconds = Number(roundHalfUp(seconds));
  if (seconds <= 0) return "-";
  const pad = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + pad(seconds % 60) + "s";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + pad(Math.floor(seconds % 3600 / 60)) + "m";
  return Math.floor(seconds / 86400) + "d" + pad(Math.floor(seconds % 86400 / 3600)) + "h";
}

function pct(x) { return x === null || x === undefined ? "?" : roundHalfUp(100 * x) + "%"; }

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

function renderSteps(data, series) {
  const counts = new Map(series.steps.map((s) => [s.step, s.counts]));
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
    tr.appendChild(el("td", roundHalfUp(s.velocity_per_min, 1) + "/min", "velocity num"));
    tr.appendChild(sparkline(s.step, counts.get(s.step) || []));
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
      : key === "completion_per_min" ? roundHalfUp(v, 1) : String(v);
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
  fillRows($("#actions tbody"), (data.operator_actions || []).map((a) => [a.at, a.verb,
    a.to_step === null ? "" : a.to_step, a.changed, a.skipped,
    a.db_user + "/" + (a.os_user || ""), a.reason]));
  fillRows($("#breakers tbody"), data.breakers.map((b) => [b.actor, b.state,
    b.consecutive_failures, b.opened_at || "", b.last_error || ""]));
}

// The whole workflow over the last hour: subjects finished per minute (bars,
// left axis) and the model lane's generation speed (a line, right axis), on a
// time axis labelled in the browser's local time.
const CHART = {W: 900, H: 210, L: 48, R: 56, T: 24, B: 30};
const FINISHED_COLOR = "#3b82f6", TOKENS_COLOR = "#ea580c";

// The smallest 1, 2 or 5 x 10^k at or above v: round axis maxima.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function hhmm(date) {
  return String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0");
}

// Minutes between time labels: at most about seven labels on the axis.
function tickEvery(n) {
  for (const m of [1, 2, 5, 10, 15, 30, 60, 120, 180, 360]) if (n / m <= 7) return m;
  return 720;
}

function chartText(parent, text, attrs) {
  const t = svg("text", Object.assign({"font-size": 11, fill: "#555"}, attrs));
  t.textContent = String(text);
  parent.appendChild(t);
  return t;
}

function drawTimeAxis(chart, minutes, x) {
  const {H, B, T, L, W, R} = CHART;
  const every = tickEvery(minutes.length);
  chart.appendChild(svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  minutes.forEach((iso, i) => {
    const d = new Date(iso);
    if (Math.round(d.getTime() / 60000) % every !== 0) return;
    chart.appendChild(svg("line", {x1: x(i), y1: T, x2: x(i), y2: H - B + 4, stroke: "#e5e5e5",
      class: "grid"}));
    chartText(chart, hhmm(d), {x: x(i), y: H - B + 16, "text-anchor": "middle",
      class: "time-label"});
  });
}

// A value axis at one side, labelled 0, half and max (half only when a whole
// number, for an axis of counts), with its caption above it, inside the frame.
function drawValueAxis(chart, max, side, color, caption, counts) {
  const {H, B, T, L, W, R} = CHART;
  const at = side === "left" ? L : W - R;
  const dx = side === "left" ? -4 : 4;
  const anchor = side === "left" ? "end" : "start";
  chart.appendChild(svg("line", {x1: at, y1: T, x2: at, y2: H - B, stroke: color}));
  for (const v of [0, max / 2, max]) {
    if (counts && !Number.isInteger(v)) continue;
    const y = H - B - v * (H - B - T) / max;
    chartText(chart, Number.isInteger(v) ? v : v.toFixed(1),
      {x: at + dx, y: y + 4, "text-anchor": anchor, fill: color});
  }
  chartText(chart, caption, {x: side === "left" ? 4 : W - 4, y: T - 10,
    "text-anchor": side === "left" ? "start" : "end", fill: color, "font-size": 11});
}

// The outline of one bar per minute, as a single line: counts per minute read
// as bars, and a quiet minute as a gap down to zero.
function barOutline(values, x, y, halfWidth, base) {
  const pts = [[x(0) - halfWidth, base]];
  values.forEach((v, i) => { pts.push([x(i) - halfWidth, y(v)], [x(i) + halfWidth, y(v)]); });
  pts.push([x(values.length - 1) + halfWidth, base]);
  return pts.map(([a, b]) => a.toFixed(1) + "," + b.toFixed(1)).join(" ");
}

// Runs of consecutive non-null values, each as a list of [index, value].
function segments(values) {
  const runs = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; }
    else run.push([i, v]);
  });
  if (run.length) runs.push(run);
  return runs;
}

function withTitle(node, text) {
  const title = svg("title");
  title.textContent = text;
  node.appendChild(title);
  return node;
}

function renderOverview(data, overview) {
  const {W, H, L, R, T, B} = CHART;
  const chart = $("#chart");
  chart.replaceChildren();
  const n = overview.minutes.length;
  const x = (i) => L + (n > 1 ? i * (W - L - R) / (n - 1) : 0);
  const finMax = niceCeil(Math.max(...overview.finished));
  const tps = overview.tokens_per_s.filter((v) => v !== null);
  const tokMax = niceCeil(Math.max(0, ...tps));
  const yFin = (v) => H - B - v * (H - B - T) / finMax;
  const yTok = (v) => H - B - v * (H - B - T) / tokMax;
  drawTimeAxis(chart, overview.minutes, x);
  drawValueAxis(chart, finMax, "left", FINISHED_COLOR, "subjects finished / min", true);
  drawValueAxis(chart, tokMax, "right", TOKENS_COLOR, "model tokens / s", false);

  const half = n > 1 ? (W - L - R) / (n - 1) / 2 * 0.8 : 4;
  const outline = barOutline(overview.finished, x, yFin, half, H - B);
  chart.appendChild(svg("polygon", {points: outline, fill: FINISHED_COLOR, "fill-opacity": 0.2}));
  const finLine = svg("polyline", {points: outline, fill: "none", stroke: FINISHED_COLOR,
    "stroke-width": 1, class: "finished"});
  chart.appendChild(withTitle(finLine, "subjects finished per minute"));
  for (const run of segments(overview.tokens_per_s)) {
    chart.appendChild(svg("polyline", {fill: "none", stroke: TOKENS_COLOR, "stroke-width": 1.5,
      class: "tokens", points: run.map(([i, v]) => x(i).toFixed(1) + "," + yTok(v).toFixed(1))
        .join(" ")}));
    for (const [i, v] of run) {
      chart.appendChild(withTitle(svg("circle", {cx: x(i).toFixed(1), cy: yTok(v).toFixed(1),
        r: 2.5, fill: TOKENS_COLOR, class: "tokens-point"}),
        hhmm(new Date(overview.minutes[i])) + ": " + v + " tokens/s, "
        + overview.tokens[i] + " tokens"));
    }
  }
  renderLegend();
  renderSummary(data, overview);
}

function renderLegend() {
  const legend = $("#legend");
  legend.replaceChildren();
  for (const [color, text] of [[FINISHED_COLOR, "subjects finished per minute (left)"],
    [TOKENS_COLOR, "model lane: completion tokens per second of generation (right)"]]) {
    const li = el("li");
    const sw = el("span", null, "swatch");
    sw.style.background = color;
    li.appendChild(sw);
    li.appendChild(document.createTextNode(text));
    legend.appendChild(li);
  }
}

// The headline figures: the same as interp status --json, plus the latest
// minute in which the model lane generated.
function renderSummary(data, overview) {
  const p = $("#overview-summary");
  p.replaceChildren();
  const item = (label, value, key) => {
    const span = el("span", null, "figure");
    span.appendChild(el("span", label + " ", "muted"));
    const b = el("b", value);
    if (key) b.dataset.key = key;
    span.appendChild(b);
    p.appendChild(span);
  };
  const t = data.totals;
  item("done", t.done + " of " + t.subjects, "done");
  item("active", t.active, "active");
  item("finished / min", roundHalfUp(t.completion_per_min, 1), "completion_per_min");
  item("ETA", duration(t.eta_s), "eta_s");
  let last = -1;
  overview.tokens_per_s.forEach((v, i) => { if (v !== null) last = i; });
  item("model", last < 0 ? "no output this hour" : overview.tokens_per_s[last] + " tokens/s at "
    + hhmm(new Date(overview.minutes[last])), "tokens_per_s");
}

// A step's ok checkpoints per minute over the hour, on its own scale (the peak
// is written beside it), so that a slow step's shape is as visible as a fast one's.
function sparkline(step, counts) {
  const w = 120, h = 22;
  const cell = el("td", null, "spark");
  const peak = Math.max(0, ...counts);
  const total = counts.reduce((a, b) => a + b, 0);
  const box = svg("svg", {viewBox: "0 0 " + w + " " + h, width: w, height: h,
    class: "sparkline", role: "img"});
  const n = counts.length;
  const x = (i) => (n > 1 ? i * (w - 4) / (n - 1) : 0) + 2;
  const y = (v) => h - 2 - (peak > 0 ? v * (h - 4) / peak : 0);
  const pts = counts.map((c, i) => x(i).toFixed(1) + "," + y(c).toFixed(1)).join(" ");
  box.appendChild(svg("polygon", {points: x(0) + "," + (h - 2) + " " + pts + " "
    + x(n - 1).toFixed(1) + "," + (h - 2), fill: FINISHED_COLOR, "fill-opacity": 0.15}));
  box.appendChild(svg("polyline", {points: pts, fill: "none", stroke: FINISHED_COLOR,
    "stroke-width": 1.2}));
  box.dataset.total = String(total);
  withTitle(box, "Step " + step + ": " + total + " ok checkpoints in the last " + n
    + " min, peak " + peak + "/min");
  cell.appendChild(box);
  cell.appendChild(el("span", peak > 0 ? "peak " + peak : "", "peak muted"));
  return cell;
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
    const [data, series, overview] = await Promise.all([getJSON("/api/status" + q),
      getJSON("/api/velocity" + q), getJSON("/api/overview" + q)]);
    $("#wf-title").textContent = data.workflow.id + " · " + data.workflow.name
      + (data.workflow.paused ? " · PAUSED" : "");
    renderSteps(data, series);
    renderTotals(data);
    renderAlerts(data);
    renderLane(data);
    renderOverview(data, overview);
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
