// span.js: select a span on any spectrogram (drag, a word or phone in the clip tiers, or the keyboard on a
// focused spectrogram) and see the features active in it and the most similar moments of the corpus.
// Atlas clips (figures with data-span-clip) ask /api/v1/clips/{id}/span and /api/v1/similar; the live page's
// analysed upload (.span-surface[data-span-upload]) posts the chosen file with the span to /api/v1/similar. The span is
// kept in the URL (?span=clip:start-end) so a link reopens it. Playback is atlas.js's (a.play, data-figure).
(function () {
  "use strict";

  const STEP_S = 0.1; // keyboard moves and resizes the span by this much
  const MIN_DRAG_PX = 4;
  let current = null; // {figure, surface, start, end}
  let drag = null;
  let serial = 0;

  const el = (tag, props, ...children) => {
    const node = Object.assign(document.createElement(tag), props || {});
    children.forEach((c) => node.append(c));
    return node;
  };

  function figureOf(node) {
    return node && node.closest("[data-span-clip], [data-span-upload]");
  }

  function surfaceOf(figure) {
    return figure.matches(".span-surface") ? figure : figure.querySelector(".spec-img");
  }

  function bounds(figure) {
    const start = parseFloat(figure.dataset.spanStart ?? figure.dataset.start) || 0;
    const end = parseFloat(figure.dataset.spanEnd ?? figure.dataset.end) || start;
    return [start, end];
  }

  function timeAt(figure, clientX) {
    const box = surfaceOf(figure).getBoundingClientRect();
    const [a, b] = bounds(figure);
    const fraction = Math.min(Math.max((clientX - box.left) / Math.max(box.width, 1), 0), 1);
    return a + fraction * (b - a);
  }

  // Draw the selection over its figure's spectrogram.
  function draw(figure, start, end) {
    document.querySelectorAll(".span-sel").forEach((s) => { if (s.parentElement !== surfaceOf(figure)) s.remove(); });
    const surface = surfaceOf(figure);
    let box = surface.querySelector(".span-sel");
    if (!box) {
      box = el("div", { className: "span-sel" });
      box.setAttribute("aria-hidden", "true");
      surface.append(box);
    }
    const [a, b] = bounds(figure);
    const span = Math.max(b - a, 1e-6);
    box.style.left = `${((start - a) / span) * 100}%`;
    box.style.width = `${((end - start) / span) * 100}%`;
    box.dataset.label = `${start.toFixed(2)}–${end.toFixed(2)} s`;
  }

  function clear() {
    document.querySelectorAll(".span-sel, .span-panel").forEach((n) => n.remove());
    current = null;
    if (window.AtlasURL) window.AtlasURL.set({ span: null });
  }

  // Select [start, end) s of `figure` and open the panel.
  function select(figure, start, end) {
    const [a, b] = bounds(figure);
    start = Math.max(a, Math.min(start, b));
    end = Math.max(start, Math.min(end, b));
    if (end - start < 0.02) return;
    current = { figure, start, end };
    draw(figure, start, end);
    const clip = figure.dataset.spanClip;
    if (clip !== undefined && window.AtlasURL) window.AtlasURL.set({ span: `${clip}:${start.toFixed(2)}-${end.toFixed(2)}` });
    openPanel(figure, start, end);
  }

  // --- the panel ------------------------------------------------------------------------------------------

  function openPanel(figure, start, end) {
    const id = ++serial;
    const clip = figure.dataset.spanClip;
    const upload = clip === undefined;
    const title = el("h2", {}, `Selected ${start.toFixed(2)}–${end.toFixed(2)} s`);
    const play = el("a", {
      className: "play",
      role: "button",
      href: upload ? "#" : `/api/v1/clips/${clip}/audio?start=${start.toFixed(3)}&end=${end.toFixed(3)}`,
      title: "Play the span",
    }, "▶");
    play.setAttribute("aria-label", "Play the selected span");
    if (upload) play.hidden = true;
    const copy = el("button", { type: "button", className: "button", title: "Copy a link to this span (c)" }, "Copy link");
    copy.dataset.action = "copy-link";
    if (upload) copy.hidden = true;
    const close = el("button", { type: "button", className: "button span-close", title: "Clear the selection (Esc)" }, "Close");
    close.addEventListener("click", clear);
    const features = el("div", { className: "span-features-col" }, el("h3", {}, "Features in the span"), status("loading…"));
    const similar = el("div", { className: "span-similar-col" }, el("h3", {}, "Similar moments"));
    const panel = el("section", { className: "card span-panel", id: `span-panel-${id}` },
      el("header", {}, play, title, copy, close), el("div", { className: "span-cols" }, features, similar));
    panel.setAttribute("aria-live", "polite");
    panel.setAttribute("aria-label", "the selected span");
    // after the figure, or after the panel or live grid that holds it (a moment found by a previous search)
    (figure.closest(".span-panel") || figure.closest(".live-time-grid") || figure).after(panel);
    document.querySelectorAll(".span-panel").forEach((n) => { if (n !== panel) n.remove(); });
    similar.append(status(upload ? "encoding the clip and searching…" : "searching…"));
    if (upload) runUpload(id, features, similar, start, end);
    else runClip(id, clip, start, end, features, similar);
  }

  function status(text, error) {
    return el("p", { className: `span-status${error ? " error" : ""}` }, text);
  }

  async function answer(response) {
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    return body;
  }

  async function runClip(id, clip, start, end, featureCol, similarCol) {
    const span = new URLSearchParams({ start: start.toFixed(3), end: end.toFixed(3) });
    const features = fetch(`/api/v1/clips/${clip}/span?${span}&features=30`).then(answer);
    const similar = fetch(`/api/v1/similar?clip=${clip}&${span}&limit=8&features=1`).then(answer);
    fill(id, featureCol, features, (body) => featureTable(body));
    fill(id, similarCol, similar, (body) => similarList(body, id));
  }

  async function runUpload(id, featureCol, similarCol, start, end) {
    const input = document.getElementById("live-file");
    const file = input && input.files[0];
    if (!file) {
      featureCol.querySelector(".span-status").replaceWith(status("choose or record a clip first", true));
      similarCol.querySelector(".span-status").remove();
      return;
    }
    const form = new FormData();
    form.append("file", file);
    form.append("start", start.toFixed(3));
    form.append("end", end.toFixed(3));
    form.append("limit", "8");
    const found = fetch("/api/v1/similar", { method: "POST", body: form }).then(answer);
    fill(id, featureCol, found, (body) => featureTable(body.query));
    fill(id, similarCol, found, (body) => similarList(body, id));
  }

  async function fill(id, column, promise, render) {
    let content;
    try {
      content = render(await promise);
    } catch (err) {
      content = status(`Failed: ${err.message}`, true);
    }
    if (!document.getElementById(`span-panel-${id}`)) return; // a newer selection replaced this panel
    column.querySelectorAll(".span-status").forEach((n) => n.remove());
    column.append(content);
  }

  function typePill(kind) {
    if (!kind) return "";
    const pill = el("span", { className: `type type-${kind}`, title: `feature type: ${kind}` }, kind);
    return pill;
  }

  function tracePolygon(values) {
    const top = Math.max(...values, 1e-9);
    const n = values.length;
    const points = values.map((v, i) => `${i + 0.5},${(100 - (v / top) * 100).toFixed(1)}`);
    return `0,100 ${points.join(" ")} ${n},100`;
  }

  function steerLink(f) {
    if (document.getElementById("live-features")) {
      const add = el("button", { type: "button", className: "icon-button live-add", title: "add to the steering panel" }, "+ steer");
      add.dataset.feature = String(f.id);
      add.dataset.label = f.label || "";
      return add;
    }
    const spec = JSON.stringify({ features: [{ id: f.id, strength: 0.5 }] });
    return el("a", { className: "icon-button", href: `/live?spec=${encodeURIComponent(spec)}`, title: "open the steering panel with this feature" }, "→ steer");
  }

  function featureTable(span) {
    const wrap = el("div");
    if (!span.features.length) {
      wrap.append(status("No feature fires in this span."));
      return wrap;
    }
    const table = el("table", { className: "span-features" });
    table.append(el("thead", {}, el("tr", {}, el("th", {}, "feature"), el("th", {}, "share"), el("th", {}, "over the span"), el("th", {}, ""))));
    const body = el("tbody");
    span.features.forEach((f) => {
      const link = el("a", { href: `/features/${f.id}` }, el("span", { className: "num" }, `#${f.id} `), f.label || "unlabelled");
      const share = el("td", { className: "share", title: `${(f.share * 100).toFixed(2)}% of the span's activation (${f.activation} in all)` },
        el("span", { style: `width:${Math.min(f.share / span.features[0].share, 1) * 100}%` }), el("b", {}, `${(f.share * 100).toFixed(1)}%`));
      const trace = el("td", { className: "trace", title: `peak ${f.peak} · fires on ${f.frames} of ${span.end_frame - span.start_frame} frames` });
      trace.innerHTML = `<svg viewBox="0 0 ${f.trace.length} 100" preserveAspectRatio="none" aria-hidden="true"><polygon points="${tracePolygon(f.trace)}"/></svg>`;
      const save = el("button", { type: "button", className: "icon-button", title: "save to a list" }, "☆");
      save.dataset.saveFeature = String(f.id);
      save.dataset.label = f.label || "";
      save.setAttribute("aria-label", `save feature ${f.id} to a list`);
      body.append(el("tr", {}, el("td", { className: "fname" }, typePill(f.label_type), " ", link), share, trace, el("td", { className: "acts" }, save, " ", steerLink(f))));
    });
    table.append(body);
    wrap.append(table, el("p", { className: "explain" },
      `${span.n_active} features fire in the span (${span.end_frame - span.start_frame} frames of 20 ms); ranked by their share of its summed activation, the stored per-frame SAE codes summed exactly. The trace is each one's activation over the span.`));
    return wrap;
  }

  function wordsHtml(words, start, end) {
    const span = Math.max(end - start, 1e-3);
    const box = el("div", { className: "words" });
    box.setAttribute("aria-label", "aligned words");
    words.forEach((w) => {
      const a = Math.max((w.start - start) / span, 0);
      const b = Math.min((w.end - start) / span, 1);
      box.append(el("span", { style: `left:${(a * 100).toFixed(1)}%;width:${(Math.max(b - a, 0.02) * 100).toFixed(1)}%`, title: `${w.word} (${w.start.toFixed(2)}–${w.end.toFixed(2)} s)` }, w.word));
    });
    return box;
  }

  function similarList(body, id) {
    const wrap = el("div");
    if (!body.results.length) {
      wrap.append(status("No other moment of the corpus shares this span's features."));
      return wrap;
    }
    const list = el("ol", { className: "similar" });
    body.results.forEach((m, i) => {
      const times = `${m.start.toFixed(2)}–${m.end.toFixed(2)} s`;
      const query = `start=${m.start.toFixed(3)}&end=${m.end.toFixed(3)}`;
      const anchor = `sim-${id}-${i}`;
      const play = el("a", { className: "play", role: "button", href: `/api/v1/clips/${m.clip_id}/audio?${query}` }, "▶");
      play.dataset.figure = anchor;
      play.setAttribute("aria-label", `Play similar moment ${i + 1}: ${m.clip_key}, ${times}`);
      const head = el("div", { className: "ex-head" }, play,
        el("span", { className: "score num", title: "cosine similarity of the pooled SAE codes" }, m.score.toFixed(2)),
        el("a", { className: "clip", href: `/clips/${m.clip_id}?span=${m.clip_id}:${m.start.toFixed(2)}-${m.end.toFixed(2)}`, title: "Open the clip at this moment" }, m.clip_key),
        m.language ? el("span", { className: "tag" }, m.language) : "",
        el("span", { className: "tag cat" }, m.category),
        el("span", { className: "muted num" }, times));
      const img = el("img", { src: `/api/v1/clips/${m.clip_id}/spectrogram.png?${query}`, alt: `log-mel spectrogram of ${m.clip_key}, ${times}`, loading: "lazy", decoding: "async" });
      const figure = el("figure", { className: "spec", id: anchor },
        el("div", { className: "spec-img" }, img, Object.assign(el("div", { className: "playhead" }), { hidden: true })),
        wordsHtml(m.words, m.start, m.end));
      figure.dataset.start = String(m.start);
      figure.dataset.end = String(m.end);
      figure.dataset.spanClip = String(m.clip_id);
      list.append(el("li", { className: "ex sim" }, head, figure));
    });
    wrap.append(list, el("p", { className: "explain" },
      `The corpus windows (0.64 s) most like the span, one per clip: ${body.method}. Found in ${body.took_ms.toFixed(0)} ms. Drag on one to explore from there.`));
    return wrap;
  }

  // --- pointer and keyboard ---------------------------------------------------------------------------------

  document.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    const figure = figureOf(event.target);
    if (!figure || !surfaceOf(figure) || !surfaceOf(figure).contains(event.target)) return;
    drag = { figure, x0: event.clientX, t0: timeAt(figure, event.clientX), moved: false };
    surfaceOf(figure).setPointerCapture(event.pointerId);
    event.preventDefault();
  });

  document.addEventListener("pointermove", (event) => {
    if (!drag) return;
    if (Math.abs(event.clientX - drag.x0) >= MIN_DRAG_PX) drag.moved = true;
    if (!drag.moved) return;
    const t = timeAt(drag.figure, event.clientX);
    draw(drag.figure, Math.min(drag.t0, t), Math.max(drag.t0, t));
  });

  document.addEventListener("pointerup", (event) => {
    if (!drag) return;
    const { figure, t0, moved } = drag;
    drag = null;
    if (!moved) return;
    const t = timeAt(figure, event.clientX);
    select(figure, Math.min(t0, t), Math.max(t0, t));
  });

  // A word or phone of the clip tiers selects its interval (atlas.js plays from its start).
  document.addEventListener("click", (event) => {
    const interval = event.target.closest(".tier button.iv[data-end]");
    const figure = interval && document.querySelector("#clip-fig[data-span-clip]");
    if (figure) select(figure, parseFloat(interval.dataset.seek), parseFloat(interval.dataset.end));
  });

  function onSurfaceKey(event) {
    const figure = figureOf(event.target);
    if (!figure || event.target !== surfaceOf(figure)) return;
    const [a, b] = bounds(figure);
    const sel = current && current.figure === figure ? current : { start: a, end: Math.min(a + 0.3, b) };
    let { start, end } = sel;
    const d = event.key === "ArrowRight" ? STEP_S : event.key === "ArrowLeft" ? -STEP_S : 0;
    if (d && event.shiftKey) end = Math.max(start + 0.04, Math.min(b, end + d));
    else if (d) {
      const width = end - start;
      start = Math.max(a, Math.min(b - width, start + d));
      end = start + width;
    } else if (event.key === "Enter" || event.key === " ") {
      select(figure, start, end);
    } else if (event.key === "Escape") {
      clear();
    } else return;
    event.preventDefault();
    event.stopPropagation(); // atlas.js would follow the next/previous feature on the arrows
    if (d) {
      current = { figure, start, end };
      draw(figure, start, end);
    }
  }

  // Make every selectable spectrogram focusable and say how to use it.
  function prepare(root) {
    root.querySelectorAll("[data-span-clip], [data-span-upload]").forEach((figure) => {
      const surface = surfaceOf(figure);
      if (!surface || surface.dataset.spanReady) return;
      surface.dataset.spanReady = "1";
      surface.tabIndex = 0;
      surface.setAttribute("role", "group");
      surface.setAttribute("aria-label", "Spectrogram: drag to select a span, or ←/→ to move and Shift+←/→ to resize a selection, Enter to show its features");
      surface.addEventListener("keydown", onSurfaceKey);
      surface.addEventListener("dragstart", (event) => event.preventDefault()); // no image ghost while selecting
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea, [contenteditable], dialog")) return;
    if (event.key === "s") {
      const first = document.querySelector(".span-panel ol.similar a.play");
      if (first) first.focus();
    } else if (event.key === "Escape" && current) clear();
  });

  // Reopen the span named in the URL (?span=clip:start-end).
  function restore() {
    const raw = window.AtlasURL && window.AtlasURL.get("span");
    const match = raw && /^(\d+):(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(raw);
    if (!match) return;
    const [, clip, s, e] = match;
    const start = parseFloat(s);
    const end = parseFloat(e);
    const figure = Array.from(document.querySelectorAll(`[data-span-clip="${clip}"]`)).find((f) => {
      const [a, b] = bounds(f);
      return start >= a - 1e-3 && end <= b + 1e-3;
    });
    if (figure) {
      select(figure, start, end);
      figure.scrollIntoView({ block: "center" });
    }
  }

  function init() {
    prepare(document);
    restore();
    new MutationObserver(() => prepare(document)).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
