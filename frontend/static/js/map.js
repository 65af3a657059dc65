// map.js: the map of the dictionary (/map) and the small map on each feature page, drawn on a canvas from
// /api/v1/map. Wheel or +/- zooms, drag or the arrow keys pan, 0 resets, hover names a feature, click (or
// Enter on the point nearest the centre) opens it. Colours: the feature types' colour-blind-safe palette
// (atlas.css), Okabe & Ito's for languages, viridis for density. The view, colouring and highlights live in
// the URL (x, y, z, color, f, list, q); a table lists the points in view for readers without the canvas.
(function () {
  "use strict";

  const OKABE_ITO = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];
  const VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
  const TYPES = ["language", "speaker", "phonetic", "lexical", "positional", "acoustic", "boundary", "non-speech", "unexplained"];
  const EXPLAIN = {
    type: "Colour: the feature's type (what its scored label says it detects).",
    language: "Colour: the language the feature prefers most (highest selectivity).",
    density: "Colour: how often the feature fires, log scale (dark = rare, yellow = frequent).",
  };
  const HIT_PX = 7;
  const TABLE_ROWS = 40;
  let points = null;

  function loadPoints() {
    if (!points) points = fetch("/api/v1/map").then((r) => (r.ok ? r.json() : r.json().then((b) => Promise.reject(new Error(b.detail || r.status)))));
    return points;
  }

  function typeColours() {
    const colours = {};
    const probe = document.createElement("span");
    probe.hidden = false;
    probe.style.position = "absolute";
    probe.style.visibility = "hidden";
    document.body.append(probe);
    TYPES.forEach((kind) => {
      probe.className = `type type-${kind}`;
      colours[kind] = getComputedStyle(probe).backgroundColor;
    });
    probe.remove();
    colours.unexplained = "#c4c6cb"; // its pill is white with a dashed edge: a light grey dot on the canvas
    colours[""] = "#9a9ca1";
    return colours;
  }

  function ramp(t) {
    const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
    const mix = (a, b) => Math.round(a + (b - a) * (x - i));
    const [r1, g1, b1] = [1, 3, 5].map((j) => parseInt(VIRIDIS[i].slice(j, j + 2), 16));
    const [r2, g2, b2] = [1, 3, 5].map((j) => parseInt(VIRIDIS[i + 1].slice(j, j + 2), 16));
    return `rgb(${mix(r1, r2)},${mix(g1, g2)},${mix(b1, b2)})`;
  }

  class FeatureMap {
    constructor(canvas, data, options) {
      this.canvas = canvas;
      this.data = data;
      // unexplained features first, so the typed ones are drawn over them
      const typed = (p) => (p.label_type === "unexplained" ? 0 : 1);
      this.points = data.points.slice().sort((a, b) => typed(a) - typed(b));
      this.byId = new Map(this.points.map((p) => [p.id, p]));
      this.mini = options.mini;
      this.focus = options.focus;
      this.marked = new Set(options.marked || []);
      this.colourBy = options.colourBy || "type";
      this.view = options.view || { x: 0.5, y: 0.5, z: 1 };
      this.types = typeColours();
      const languages = [...new Set(this.points.map((p) => p.top_language).filter(Boolean))].sort();
      this.languages = Object.fromEntries(languages.map((l, i) => [l, OKABE_ITO[i % OKABE_ITO.length]]));
      const logs = this.points.filter((p) => p.density > 0).map((p) => Math.log10(p.density));
      this.densityRange = [Math.min(...logs, -6), Math.max(...logs, 0)];
      this.onView = options.onView || (() => {});
      this.tip = canvas.parentElement.querySelector(".map-tip");
      this.bind();
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    colour(p) {
      if (this.colourBy === "language") return this.languages[p.top_language] || "#9a9ca1";
      if (this.colourBy === "density") {
        const [lo, hi] = this.densityRange;
        return p.density > 0 ? ramp((Math.log10(p.density) - lo) / Math.max(hi - lo, 1e-9)) : "#9a9ca1";
      }
      return this.types[p.label_type] || this.types[""];
    }

    scale() {
      return this.view.z * Math.min(this.width, this.height) * 0.92;
    }

    toScreen(p) {
      const s = this.scale();
      return [this.width / 2 + (p.x - this.view.x) * s, this.height / 2 - (p.y - this.view.y) * s];
    }

    toData(sx, sy) {
      const s = this.scale();
      return [this.view.x + (sx - this.width / 2) / s, this.view.y - (sy - this.height / 2) / s];
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      this.width = canvas.clientWidth;
      this.height = canvas.clientHeight;
      if (!this.width || !this.height) return;
      canvas.width = Math.round(this.width * ratio);
      canvas.height = Math.round(this.height * ratio);
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, this.width, this.height);
      const radius = Math.max(1.6, Math.min(5, (this.mini ? 1.8 : 2.6) * Math.sqrt(this.view.z)));
      const highlighted = this.focus !== undefined || this.marked.size > 0;
      ctx.globalAlpha = highlighted ? 0.45 : 0.9;
      this.points.forEach((p) => {
        const [sx, sy] = this.toScreen(p);
        if (sx < -5 || sy < -5 || sx > this.width + 5 || sy > this.height + 5) return;
        ctx.fillStyle = this.colour(p);
        ctx.beginPath();
        ctx.arc(sx, sy, radius, 0, 2 * Math.PI);
        ctx.fill();
      });
      ctx.globalAlpha = 1;
      const ring = (p, r, width) => {
        const [sx, sy] = this.toScreen(p);
        ctx.fillStyle = this.colour(p);
        ctx.beginPath();
        ctx.arc(sx, sy, radius + 1, 0, 2 * Math.PI);
        ctx.fill();
        ctx.strokeStyle = "#1b1c1e";
        ctx.lineWidth = width;
        ctx.beginPath();
        ctx.arc(sx, sy, r, 0, 2 * Math.PI);
        ctx.stroke();
        return [sx, sy];
      };
      this.marked.forEach((id) => { const p = this.byId.get(id); if (p) ring(p, radius + 3, 1.5); });
      const focus = this.byId.get(this.focus);
      if (focus) {
        const [sx, sy] = ring(focus, radius + 6, 2.5);
        if (!this.mini) {
          ctx.font = "12px system-ui, sans-serif";
          ctx.fillStyle = "#1b1c1e";
          ctx.fillText(`#${focus.id} ${focus.label}`.slice(0, 60), sx + radius + 9, sy + 4);
        }
      }
      if (!this.mini && document.activeElement === this.canvas) {
        ctx.strokeStyle = "rgba(27, 28, 30, 0.5)";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(this.width / 2 - 8, this.height / 2);
        ctx.lineTo(this.width / 2 + 8, this.height / 2);
        ctx.moveTo(this.width / 2, this.height / 2 - 8);
        ctx.lineTo(this.width / 2, this.height / 2 + 8);
        ctx.stroke();
      }
      this.onView(this);
    }

    nearest(sx, sy, within) {
      let best = null;
      let bestD = within * within;
      this.points.forEach((p) => {
        const [px, py] = this.toScreen(p);
        const d = (px - sx) ** 2 + (py - sy) ** 2;
        if (d <= bestD) { bestD = d; best = p; }
      });
      return best;
    }

    inView() {
      return this.points.filter((p) => {
        const [sx, sy] = this.toScreen(p);
        return sx >= 0 && sy >= 0 && sx <= this.width && sy <= this.height;
      });
    }

    zoom(factor, sx, sy) {
      const [dx, dy] = this.toData(sx ?? this.width / 2, sy ?? this.height / 2);
      this.view.z = Math.min(Math.max(this.view.z * factor, 0.5), 200);
      const [nx, ny] = this.toData(sx ?? this.width / 2, sy ?? this.height / 2);
      this.view.x += dx - nx;
      this.view.y += dy - ny;
      this.draw();
    }

    pan(dxPx, dyPx) {
      const s = this.scale();
      this.view.x -= dxPx / s;
      this.view.y += dyPx / s;
      this.draw();
    }

    centreOn(p, z) {
      this.view = { x: p.x, y: p.y, z: z || Math.max(this.view.z, 3) };
      this.draw();
    }

    open(p) {
      location.href = `/features/${p.id}`;
    }

    showTip(p, sx, sy) {
      if (!this.tip) return;
      if (!p) { this.tip.hidden = true; return; }
      this.tip.textContent = `#${p.id} ${p.label || "unlabelled"}${p.label_type ? ` · ${p.label_type}` : ""}${p.top_language ? ` · ${p.top_language}` : ""}`;
      this.tip.style.left = `${Math.min(sx + 12, this.width - 200)}px`;
      this.tip.style.top = `${Math.max(sy - 28, 2)}px`;
      this.tip.hidden = false;
    }

    bind() {
      const canvas = this.canvas;
      const local = (e) => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
      let drag = null;
      canvas.addEventListener("pointerdown", (e) => {
        if (this.mini) return;
        drag = { x: e.clientX, y: e.clientY, moved: false };
        canvas.setPointerCapture(e.pointerId);
        canvas.classList.add("dragging");
      });
      canvas.addEventListener("pointermove", (e) => {
        if (drag) {
          const dx = e.clientX - drag.x;
          const dy = e.clientY - drag.y;
          if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
          if (drag.moved) { this.pan(dx, dy); drag.x = e.clientX; drag.y = e.clientY; }
          return;
        }
        const [sx, sy] = local(e);
        const p = this.nearest(sx, sy, HIT_PX);
        canvas.style.cursor = p ? "pointer" : "";
        this.showTip(p, sx, sy);
      });
      canvas.addEventListener("pointerleave", () => this.showTip(null));
      canvas.addEventListener("pointerup", (e) => {
        const moved = drag && drag.moved;
        drag = null;
        canvas.classList.remove("dragging");
        if (moved) return;
        const [sx, sy] = local(e);
        const p = this.nearest(sx, sy, this.mini ? 12 : HIT_PX);
        if (p) this.open(p);
        else if (this.mini) location.href = `/map?f=${this.focus}&z=3&x=${this.view.x.toFixed(4)}&y=${this.view.y.toFixed(4)}`;
      });
      if (!this.mini) {
        canvas.addEventListener("wheel", (e) => {
          e.preventDefault();
          const [sx, sy] = local(e);
          this.zoom(Math.exp(-e.deltaY * 0.0015), sx, sy);
        }, { passive: false });
      }
      canvas.addEventListener("focus", () => this.draw());
      canvas.addEventListener("blur", () => this.draw());
      canvas.addEventListener("keydown", (e) => {
        if (e.ctrlKey || e.metaKey || e.altKey) return;
        const step = 40;
        const keys = {
          ArrowLeft: () => this.pan(step, 0),
          ArrowRight: () => this.pan(-step, 0),
          ArrowUp: () => this.pan(0, step),
          ArrowDown: () => this.pan(0, -step),
          "+": () => this.zoom(1.5),
          "=": () => this.zoom(1.5),
          "-": () => this.zoom(1 / 1.5),
          "0": () => { this.view = { x: 0.5, y: 0.5, z: 1 }; this.draw(); },
          Enter: () => { const p = this.nearest(this.width / 2, this.height / 2, Infinity); if (p) this.open(p); },
        };
        if (this.mini && e.key === "Enter") { location.href = `/map?f=${this.focus}&z=3&x=${this.view.x.toFixed(4)}&y=${this.view.y.toFixed(4)}`; return; }
        if (this.mini || !keys[e.key]) return;
        e.preventDefault();
        e.stopPropagation(); // atlas.js reads the arrows as next/previous feature
        keys[e.key]();
      });
    }
  }

  // --- /map --------------------------------------------------------------------------------------------------

  function legend(map, box) {
    const items = [];
    if (map.colourBy === "density") {
      const [lo, hi] = map.densityRange;
      const bar = document.createElement("span");
      bar.className = "ramp";
      bar.style.background = `linear-gradient(to right, ${VIRIDIS.join(", ")})`;
      items.push([null, `${(10 ** lo * 100).toPrecision(2)}%`], [bar, `${(10 ** hi * 100).toPrecision(2)}% of frames`]);
    } else {
      const counts = {};
      map.points.forEach((p) => {
        const key = map.colourBy === "language" ? p.top_language : p.label_type;
        counts[key] = (counts[key] || 0) + 1;
      });
      const keys = map.colourBy === "language" ? Object.keys(map.languages) : TYPES.filter((t) => counts[t]).concat(counts[""] ? [""] : []);
      keys.forEach((key) => {
        const dot = document.createElement("i");
        dot.style.background = map.colourBy === "language" ? map.languages[key] : map.types[key];
        items.push([dot, `${key || "untyped"} (${counts[key] || 0})`]);
      });
    }
    box.replaceChildren(...items.map(([mark, text]) => {
      const li = document.createElement("li");
      if (mark) li.append(mark);
      li.append(text);
      return li;
    }));
  }

  function table(map, body, caption) {
    const shown = map.inView().sort((a, b) => b.density - a.density);
    caption.textContent = `${shown.length} of ${map.points.length} features in view${shown.length > TABLE_ROWS ? `, the ${TABLE_ROWS} densest listed` : ""}`;
    body.replaceChildren(...shown.slice(0, TABLE_ROWS).map((p) => {
      const tr = document.createElement("tr");
      const link = Object.assign(document.createElement("a"), { href: `/features/${p.id}` });
      link.textContent = `#${p.id} ${p.label || "unlabelled"}`;
      [link, p.label_type || "—", p.top_language || "—", `${(p.density * 100).toPrecision(3)}%`].forEach((value) => {
        const td = document.createElement("td");
        td.append(value);
        tr.append(td);
      });
      return tr;
    }));
  }

  async function initPage(canvas) {
    const url = window.AtlasURL;
    const status = document.getElementById("map-status");
    let data;
    try {
      data = await loadPoints();
    } catch (err) {
      status.textContent = `The map is not available: ${err.message}`;
      return;
    }
    const num = (key, fallback) => { const v = parseFloat(url.get(key)); return Number.isFinite(v) ? v : fallback; };
    const select = document.getElementById("map-color");
    const find = document.getElementById("map-find");
    const colourBy = ["type", "language", "density"].includes(url.get("color")) ? url.get("color") : "type";
    select.value = colourBy;
    const focus = url.get("f") !== null ? parseInt(url.get("f"), 10) : undefined;
    const listName = url.get("list");
    const listed = listName && window.AtlasLists ? (window.AtlasLists.load()[listName] || []).map((f) => f.id) : [];
    const explain = document.getElementById("map-explain");
    const legendBox = document.getElementById("map-legend");
    const tableBody = document.querySelector("#map-table tbody");
    const caption = document.querySelector("#map-table caption");
    let pending = 0;
    const map = new FeatureMap(canvas, data, {
      colourBy,
      focus,
      marked: listed,
      view: { x: num("x", 0.5), y: num("y", 0.5), z: Math.min(Math.max(num("z", 1), 0.5), 200) },
      onView: (m) => {
        clearTimeout(pending);
        pending = setTimeout(() => {
          url.set({ x: m.view.x.toFixed(4), y: m.view.y.toFixed(4), z: m.view.z.toFixed(3), color: m.colourBy === "type" ? null : m.colourBy });
          table(m, tableBody, caption);
        }, 150);
      },
    });
    const focused = map.byId.get(focus);
    if (focused && url.get("x") === null) map.centreOn(focused, num("z", 3));
    status.textContent = `${data.points.length} live features.${listName ? ` Ringed: the list “${listName}” (${listed.length}).` : ""}${focused ? ` Ringed: #${focused.id}.` : ""}`;
    const recolour = () => {
      map.colourBy = select.value;
      explain.textContent = EXPLAIN[map.colourBy];
      legend(map, legendBox);
      map.draw();
    };
    select.addEventListener("change", recolour);
    document.querySelectorAll("[data-map]").forEach((button) =>
      button.addEventListener("click", () => {
        const action = button.dataset.map;
        if (action === "in") map.zoom(1.5);
        else if (action === "out") map.zoom(1 / 1.5);
        else { map.view = { x: 0.5, y: 0.5, z: 1 }; map.draw(); }
      })
    );
    const highlight = () => {
      const q = find.value.trim().toLowerCase();
      url.set({ q: q || null });
      if (!q) { map.marked = new Set(listed); map.draw(); return; }
      const hits = map.points.filter((p) => String(p.id) === q || (p.label || "").toLowerCase().includes(q));
      map.marked = new Set(hits.map((p) => p.id));
      status.textContent = `${hits.length} features match “${q}” (ringed).`;
      if (hits.length === 1) map.centreOn(hits[0]);
      else map.draw();
    };
    find.value = url.get("q") || "";
    find.addEventListener("input", highlight);
    recolour();
    if (find.value) highlight();
  }

  async function initMini(canvas) {
    let data;
    try {
      data = await loadPoints();
    } catch (err) {
      canvas.closest("section").hidden = true;
      return;
    }
    const focus = parseInt(canvas.dataset.mapMini, 10);
    const map = new FeatureMap(canvas, data, { mini: true, focus });
    map.draw();
    if (!map.byId.has(focus)) canvas.setAttribute("aria-label", "the map of all features (this one is not on it: it never fires)");
  }

  function init() {
    const page = document.getElementById("map-canvas");
    if (page) initPage(page);
    document.querySelectorAll("canvas[data-map-mini]").forEach(initMini);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
