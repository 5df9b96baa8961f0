// interp dashboard: the timeline. The model lane's intervals as coloured bands
// (one row per run), hardware utilisation as lines, model loads and switches,
// breaker openings and pauses as markers, each with a tooltip. Like the rest of
// the page, every piece of text from the database goes in through textContent
// (SVG <title> and <text> nodes included): never innerHTML.
"use strict";

(function () {
  const TIMELINE_REFRESH_MS = 5000;
  const NS = "http://www.w3.org/2000/svg";
  const CAUSE_COLORS = {
    generating: "#10b981", loading: "#f59e0b", switching: "#f97316",
    waiting_claim: "#93c5fd", breaker: "#ef4444", limited: "#a855f7",
    waiting_commit: "#6366f1",
    idle: "#e5e7eb", paused: "#6b7280",
  };
  const MARKER_COLORS = {load: "#b45309", switch: "#c2410c", load_failed: "#7f1d1d",
    breaker_open: "#dc2626", pause: "#374151"};
  const W = 800, LEFT = 44, RIGHT = 8, BAND_TOP = 18, BAND_H = 36, PLOT_TOP = 70, PLOT_H = 110;
  const H = PLOT_TOP + PLOT_H + 22;

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = String(text);
    return n;
  }

  function tip(parent, text) {
    parent.appendChild(node("title", {}, text));
    return parent;
  }

  function workflowId() {
    const select = document.querySelector("#workflow");
    if (select && select.value) return select.value;
    return new URLSearchParams(location.search).get("workflow");
  }

  function hhmm(ms, withSeconds) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (withSeconds ? ":" + pad(d.getSeconds()) : "");
  }

  function seconds(s) {
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    return (s / 60).toFixed(1) + " min";
  }

  // The same line as `interp status` (interpreter/ops/timeline.py, lane_line).
  function renderShare(lane, labels, causes) {
    const p = document.querySelector("#lane-time");
    p.replaceChildren();
    const share = lane.share || {};
    const entries = Object.entries(share).filter(([, v]) => v >= 0.005)
      .sort((a, b) => (b[1] - a[1]) || (causes.indexOf(a[0]) - causes.indexOf(b[0])));
    if (!entries.length) { p.textContent = "no lane time recorded yet"; return; }
    p.appendChild(document.createTextNode("lane "));
    entries.forEach(([cause, v], k) => {
      if (k) p.appendChild(document.createTextNode(" · "));
      const span = document.createElement("span");
      span.className = "lane-cause";
      span.dataset.cause = cause;
      span.dataset.share = String(v);
      span.textContent = roundHalfUp(100 * v) + "% " + labels[cause];
      p.appendChild(span);
    });
    if (lane.gpu_util_mean !== null && lane.gpu_util_mean !== undefined) {
      const gpu = document.createElement("span");
      gpu.id = "lane-gpu";
      gpu.dataset.gpu = String(lane.gpu_util_mean);
      gpu.textContent = " · GPU " + roundHalfUp(lane.gpu_util_mean) + "% mean"
        + (lane.gpu_util_generating !== null ? " (" + roundHalfUp(lane.gpu_util_generating)
          + "% while generating)" : "");
      p.appendChild(gpu);
    }
  }

  function renderLegend(causes, labels) {
    const ul = document.querySelector("#timeline-legend");
    ul.replaceChildren();
    Object.assign(ul.style, {listStyle: "none", padding: "0", display: "flex", gap: "1rem",
      flexWrap: "wrap"});
    for (const cause of causes) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = CAUSE_COLORS[cause];
      li.appendChild(sw);
      li.appendChild(document.createTextNode(labels[cause]));
      ul.appendChild(li);
    }
  }

  function draw(data) {
    const chart = document.querySelector("#timeline");
    chart.replaceChildren();
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    let t1 = Date.parse(data.now);
    let t0 = Date.parse(data.since);
    if (data.fit) {
      // The server starts the window at the first recorded moment; end it at the
      // last, with a little room each side.
      const ends = data.intervals.map((i) => Date.parse(i.ended_at))
        .concat(data.samples.map((s) => Date.parse(s.at)));
      if (ends.length) {
        const last = Math.max(...ends);
        const room = 0.02 * (last - t0) + 500;
        t0 -= room;
        t1 = Math.min(t1, last + room);
      }
    }
    const x = (ms) => LEFT + Math.max(0, Math.min(1, (ms - t0) / (t1 - t0))) * (W - LEFT - RIGHT);
    const plotBottom = PLOT_TOP + PLOT_H;
    const y = (pct) => plotBottom - Math.max(0, Math.min(100, pct)) * PLOT_H / 100;

    // Axes: the time axis under the plot, 0-100 % on the left.
    chart.appendChild(node("line", {x1: LEFT, y1: plotBottom, x2: W - RIGHT, y2: plotBottom, stroke: "#999"}));
    chart.appendChild(node("line", {x1: LEFT, y1: PLOT_TOP, x2: LEFT, y2: plotBottom, stroke: "#999"}));
    chart.appendChild(node("text", {x: 4, y: PLOT_TOP + 8, "font-size": 10}, "100%"));
    chart.appendChild(node("text", {x: 4, y: plotBottom, "font-size": 10}, "0%"));
    chart.appendChild(node("text", {x: 4, y: BAND_TOP + BAND_H / 2 + 4, "font-size": 10}, "lane"));
    const withSeconds = (t1 - t0) <= 30 * 60 * 1000;
    const ticks = withSeconds && (t1 - t0) < 60 * 1000 ? 4 : 5;
    for (let k = 0; k <= ticks; k++) {
      const ms = t0 + k * (t1 - t0) / ticks;
      const label = node("text", {x: x(ms), y: plotBottom + 14, "font-size": 10,
        "text-anchor": k === 0 ? "start" : (k === ticks ? "end" : "middle")}, hhmm(ms, withSeconds));
      label.classList.add("tick");
      chart.appendChild(label);
    }

    // The lane's intervals, one row per run.
    const runs = [...new Set(data.intervals.map((i) => i.run_id))];
    const rowH = BAND_H / Math.max(1, runs.length);
    const bands = node("g", {class: "bands"});
    for (const i of data.intervals) {
      const a = x(Date.parse(i.started_at)), b = x(Date.parse(i.ended_at));
      const row = runs.indexOf(i.run_id);
      const rect = node("rect", {x: a.toFixed(2), y: (BAND_TOP + row * rowH).toFixed(2),
        width: Math.max(0.5, b - a).toFixed(2), height: rowH.toFixed(2),
        fill: CAUSE_COLORS[i.cause] || "#000"});
      rect.dataset.cause = i.cause;
      rect.dataset.run = String(i.run_id);
      let text = data.labels[i.cause] + " · " + seconds(Number(i.seconds)) + " · run " + i.run_id;
      if (i.model) text += " · model " + i.model;
      if (i.step !== null) text += " · step " + i.step;
      if (i.subjects !== null) text += " · " + i.subjects + " subject(s)";
      text += " · " + hhmm(Date.parse(i.started_at), true) + "–" + hhmm(Date.parse(i.ended_at), true);
      bands.appendChild(tip(rect, text));
    }
    chart.appendChild(bands);

    // Utilisation: CPU always, GPU (and its memory) when sampled.
    const lines = [["cpu_pct", "#3b82f6", "CPU"], ["gpu_pct", "#8b5cf6", "GPU"]];
    for (const [key, color, name] of lines) {
      const pts = data.samples.filter((s) => s[key] !== null && s[key] !== undefined);
      if (!pts.length) continue;
      const line = node("polyline", {fill: "none", stroke: color, "stroke-width": 1.5,
        points: pts.map((s) => x(Date.parse(s.at)).toFixed(1) + "," + y(s[key]).toFixed(1)).join(" ")});
      line.dataset.series = key;
      const mean = pts.reduce((acc, s) => acc + s[key], 0) / pts.length;
      chart.appendChild(tip(line, name + " utilisation, mean " + mean.toFixed(0) + "% over "
        + pts.length + " point(s)"));
    }

    // Markers: a line through the whole chart, a dot on top, the text as tooltip.
    for (const m of data.markers) {
      const mx = x(Date.parse(m.at));
      const g = node("g", {class: "marker"});
      g.dataset.kind = m.kind;
      const color = MARKER_COLORS[m.kind] || "#111";
      g.appendChild(node("line", {x1: mx, y1: BAND_TOP - 6, x2: mx, y2: plotBottom,
        stroke: color, "stroke-width": 1.2, "stroke-dasharray": "3,2"}));
      g.appendChild(node("circle", {cx: mx, cy: BAND_TOP - 8, r: 4, fill: color}));
      chart.appendChild(tip(g, hhmm(Date.parse(m.at), true) + " " + m.text));
    }
  }

  async function refreshTimeline() {
    const wf = workflowId();
    const status = document.querySelector("#timeline-status");
    if (wf === null || wf === "") return;
    const choice = document.querySelector("#timeline-since").value;
    const since = choice;
    try {
      const resp = await fetch("/api/timeline?workflow=" + encodeURIComponent(wf)
        + "&since=" + encodeURIComponent(since), {cache: "no-store"});
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      renderShare(data.lane_time, data.labels, data.causes);
      renderLegend(data.causes, data.labels);
      draw(data);
      document.querySelector("#timeline-section").dataset.now = data.now;
      status.textContent = data.intervals.length + " interval(s), " + data.samples.length
        + " sample point(s), " + data.markers.length + " marker(s)";
    } catch (err) {
      status.textContent = "timeline: " + String(err.message || err);
    }
  }

  function start() {
    document.querySelector("#timeline-since").addEventListener("change", refreshTimeline);
    const select = document.querySelector("#workflow");
    if (select) select.addEventListener("change", refreshTimeline);
    // The workflow list is filled in by dashboard.js; give it a moment first.
    setTimeout(refreshTimeline, 300);
    setInterval(refreshTimeline, TIMELINE_REFRESH_MS);
  }

  start();
})();
