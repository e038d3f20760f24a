// A function's traffic per version over time: requests/s, errors/s and p99, one
// line per version, drawn as inline SVG from GET /functions/{id}/series (the
// nodes' reports summed over nodes). Refreshed every ten seconds while shown.

import { get } from "./api.js";
import { h, replace } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 10000;
// Each window and its step: about ninety points, never finer than the nodes report.
const WINDOWS = [
  { label: "15 minutes", seconds: 900, step: 10 },
  { label: "1 hour", seconds: 3600, step: 60 },
  { label: "6 hours", seconds: 21600, step: 300 },
  { label: "24 hours", seconds: 86400, step: 900 },
];
// Told apart by colour and by dash, for readers who cannot tell the colours apart.
const COLOURS = ["#1f5fd1", "#d1491f", "#17794a", "#8a3fc7", "#9a6200", "#0f7f8c", "#b42367", "#5d6678"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3"];
const SIZE = { width: 360, height: 190, left: 52, right: 12, top: 12, bottom: 34 };
const METRICS = [
  { key: "requests", title: "Requests", unit: "req/s",
    value: (p, step) => p.requests / step, dense: true },
  { key: "errors", title: "Errors", unit: "errors/s",
    value: (p, step) => p.errors / step, dense: true },
  { key: "p99", title: "p99 latency", unit: "ms",
    value: (p) => (p.p99_s === null ? null : p.p99_s * 1000), dense: false },
];

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== "") el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// 1, 2, 2.5 or 5 times a power of ten, at least `v`.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= v * 1.0001) return m * power;
  return 10 * power;
}

function number(v) {
  if (v === 0) return "0";
  if (Math.abs(v) >= 100) return String(Math.round(v));
  return String(Number(v.toPrecision(2)));
}

function clock(ms, withSeconds = false) {
  return new Date(ms).toISOString().slice(11, withSeconds ? 19 : 16);
}

// Per version, each step's value from since to until (0 where nothing was reported
// for a dense metric, a gap otherwise), and the points themselves for tooltips.
function steps(series, metric) {
  const since = Date.parse(series.since);
  const until = Date.parse(series.until);
  const step = series.step_s * 1000;
  const count = Math.max(1, Math.ceil((until - since) / step));
  return series.versions.map((v) => {
    const values = new Array(count).fill(metric.dense ? 0 : null);
    const byStep = new Map();
    for (const p of v.points) {
      const i = Math.floor((Date.parse(p.at) - since) / step);
      if (i < 0 || i >= count) continue;
      values[i] = metric.value(p, series.step_s);
      byStep.set(i, p);
    }
    return { version: v.version, values, byStep };
  });
}

function tooltip(version, p, step) {
  const rate = p.requests ? ` (${number((100 * p.errors) / p.requests)}%)` : "";
  const p99 = p.p99_s === null ? "-" : number(p.p99_s * 1000) + " ms";
  return `${version} at ${clock(Date.parse(p.at), true)} UTC, ${step} s: ` +
    `${p.requests} requests (${number(p.requests / step)} req/s), ${p.errors} errors${rate}, p99 ${p99}`;
}

function chart(series, metric, colourOf) {
  const { width, height, left, right, top, bottom } = SIZE;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const lines = steps(series, metric);
  const count = lines.length ? lines[0].values.length : 1;
  const max = niceMax(Math.max(0, ...lines.flatMap((l) => l.values.filter((v) => v !== null))));
  const x = (i) => left + (count <= 1 ? plotW / 2 : (i * plotW) / (count - 1));
  const y = (v) => top + plotH - (v / max) * plotH;
  const since = Date.parse(series.since);
  const step = series.step_s * 1000;

  const grid = [];
  for (let k = 0; k <= 4; k += 1) {
    const v = (max * k) / 4;
    grid.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    grid.push(svg("text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, number(v)));
  }
  for (let k = 0; k <= 3; k += 1) {
    const i = Math.round(((count - 1) * k) / 3);
    grid.push(svg("text", { class: "tick", x: x(i), y: height - bottom + 16,
      "text-anchor": k === 0 ? "start" : k === 3 ? "end" : "middle" }, clock(since + i * step)));
  }

  const drawn = lines.map((line) => {
    let d = "";
    let pen = false;
    line.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    const { colour, dash } = colourOf(line.version);
    const dots = [...line.byStep.entries()]
      .filter(([i]) => line.values[i] !== null)
      .map(([i, p]) => svg("circle", { class: "dot", cx: x(i).toFixed(1), cy: y(line.values[i]).toFixed(1),
        r: 2.5, fill: colour }, svg("title", {}, tooltip(line.version, p, series.step_s))));
    return svg("g", { class: "series", "data-version": line.version },
      svg("path", { class: "line", d, stroke: colour, "stroke-dasharray": dash, fill: "none",
        "data-version": line.version }),
      dots);
  });

  const label = `${metric.title} per version, ${metric.unit}`;
  return h("figure", { class: "chart", "data-metric": metric.key },
    h("figcaption", {}, metric.title, " ", h("span", { class: "muted" }, `(${metric.unit})`)),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
      "data-metric": metric.key },
    svg("title", {}, label),
    grid,
    svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotH }),
    svg("line", { class: "axis", x1: left, x2: width - right, y1: top + plotH, y2: top + plotH }),
    svg("text", { class: "unit", x: 12, y: top, transform: `rotate(-90 12 ${top})`,
      "text-anchor": "end" }, metric.unit),
    svg("text", { class: "unit", x: width - right, y: height - 2, "text-anchor": "end" }, "UTC"),
    drawn),
  );
}

function legend(series, colourOf) {
  return h("ul", { class: "legend", "aria-label": "Versions" },
    series.versions.map((v) => {
      const { colour, dash } = colourOf(v.version);
      const requests = v.points.reduce((n, p) => n + p.requests, 0);
      const errors = v.points.reduce((n, p) => n + p.errors, 0);
      return h("li", { "data-version": v.version },
        svg("svg", { viewBox: "0 0 24 8", width: 24, height: 8, "aria-hidden": "true" },
          svg("line", { x1: 0, x2: 24, y1: 4, y2: 4, stroke: colour, "stroke-width": 3,
            "stroke-dasharray": dash })),
        h("span", { class: "version" }, v.version),
        h("span", { class: "muted" }, ` ${requests} requests, ${errors} errors`));
    }));
}

// The section, at once; its charts once the series came (and every REFRESH_MS).
export function traffic(functionId, screen) {
  const path = "/functions/" + encodeURIComponent(functionId) + "/series";
  const colours = new Map();
  const colourOf = (version) => {
    if (!colours.has(version)) {
      const n = colours.size;
      colours.set(version, { colour: COLOURS[n % COLOURS.length], dash: DASHES[n % DASHES.length] });
    }
    return colours.get(version);
  };
  const picker = h("select", { id: "traffic-window", name: "window" },
    WINDOWS.map((w, i) => h("option", { value: String(i) }, w.label)));
  const body = h("div", { class: "traffic", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading…"));
  const load = async () => {
    const w = WINDOWS[Number(picker.value)] ?? WINDOWS[0];
    const since = new Date(Date.now() - w.seconds * 1000).toISOString();
    const series = await get(`${path}?since=${encodeURIComponent(since)}&step_s=${w.step}`);
    if (!screen.alive()) return;
    body.setAttribute("aria-busy", "false");
    if (!series.versions.length) {
      replace(body, h("p", { class: "empty" },
        `No requests reported in the last ${w.label}. Nodes report each version's traffic with their heartbeats.`));
      return;
    }
    replace(body, legend(series, colourOf),
      h("div", { class: "charts" }, METRICS.map((m) => chart(series, m, colourOf))));
  };
  const reload = () => load().catch((exc) => screen.error(exc));
  picker.addEventListener("change", reload);
  reload();
  screen.every(REFRESH_MS, reload);
  return h("section", { "aria-labelledby": "traffic-title" },
    h("h3", { id: "traffic-title" }, "Traffic per version"),
    h("div", { class: "toolbar" }, h("label", { for: "traffic-window" }, "Last"), picker),
    body);
}
