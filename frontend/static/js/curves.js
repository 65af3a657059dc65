// curves.js: a steering preset's strength curve as an SVG line chart and as a table (its text alternative).
// Used by /live (the chosen preset) and /steering (every preset). Colors: Okabe-Ito, safe for color-blind
// readers. `preset` is one item of GET /api/v1/presets.
(function () {
  "use strict";

  const COLORS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"];
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const pretty = (name) => name.replace(/_/g, " ");
  const rates = (preset) => Object.keys(preset.curve).filter((k) => k !== "strength" && k !== "silencing_gain");

  function draw(svg, preset) {
    const xs = preset.curve.strength;
    const names = rates(preset);
    const [left, right, top, bottom] = [36, 300, 10, 150];
    const xMax = Math.max(...xs, 1e-9);
    const x = (v) => left + (v / xMax) * (right - left);
    const y = (v) => bottom - Math.max(0, Math.min(1, v)) * (bottom - top);
    const nodes = [
      el("line", { x1: left, y1: bottom, x2: right, y2: bottom, class: "axis" }),
      el("line", { x1: left, y1: top, x2: left, y2: bottom, class: "axis" }),
      el("text", { x: left - 4, y: top + 4, "text-anchor": "end", class: "tick" }, "1"),
      el("text", { x: left - 4, y: bottom, "text-anchor": "end", class: "tick" }, "0"),
      el("text", { x: (left + right) / 2, y: bottom + 26, "text-anchor": "middle", class: "tick" }, "strength"),
      el("line", { x1: x(preset.default_strength), y1: top, x2: x(preset.default_strength), y2: bottom, class: "default" }),
    ];
    xs.forEach((v) => nodes.push(el("text", { x: x(v), y: bottom + 12, "text-anchor": "middle", class: "tick" }, String(v))));
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const points = preset.curve[name].map((v, j) => `${x(xs[j])},${y(v)}`).join(" ");
      nodes.push(el("polyline", { points, fill: "none", stroke: color, "stroke-width": 2 }));
      preset.curve[name].forEach((v, j) => nodes.push(el("circle", { cx: x(xs[j]), cy: y(v), r: 2.5, fill: color })));
      nodes.push(el("rect", { x: 312, y: top + i * 16, width: 10, height: 10, fill: color }));
      nodes.push(el("text", { x: 326, y: top + 9 + i * 16, class: "tick" }, pretty(name)));
    });
    svg.replaceChildren(...nodes);
    const summary = names.map((n) => `${pretty(n)} ${preset.curve[n].join(", ")}`).join("; ");
    svg.setAttribute("aria-label", `${preset.id}: ${summary} at strengths ${xs.join(", ")}`);
  }

  function table(preset) {
    const body = document.createElement("tbody");
    const row = (cells, tag) => {
      const tr = document.createElement("tr");
      cells.forEach((c) => tr.append(Object.assign(document.createElement(tag), { textContent: String(c) })));
      return tr;
    };
    body.append(row(["strength", ...preset.curve.strength], "th"));
    rates(preset).forEach((n) => body.append(row([pretty(n), ...preset.curve[n]], "td")));
    return body;
  }

  window.steeringCurves = { draw, table };

  function drawAll() {
    document.querySelectorAll("svg[data-preset]").forEach((svg) => {
      const preset = JSON.parse(document.getElementById(svg.dataset.preset).textContent);
      draw(svg, preset);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
