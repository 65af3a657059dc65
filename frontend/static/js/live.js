// live.js: the /live page. Picks or records a clip (MediaRecorder, WebM/Opus), keeps the steering spec in the
// hidden `spec` field that htmx posts with the file, and reads the analysed clip's per-frame features on hover.
// Requests and swaps themselves are htmx's (hx-post on the Analyse and Steer buttons).
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function init() {
    const form = $("#live-form");
    if (!form) return;
    form.addEventListener("submit", (e) => e.preventDefault());
    $("#live-file").addEventListener("change", () => clipChosen());
    $("#live-record").addEventListener("click", toggleRecording);
    $("#live-preset").addEventListener("change", presetChosen);
    $$("input[name=live-target-kind]").forEach((r) => r.addEventListener("change", showPanel));
    form.addEventListener("input", syncSpec);
    form.addEventListener("change", syncSpec);
    document.addEventListener("click", onClick);
    setupSearch();
    document.body.addEventListener("htmx:configRequest", (e) => {
      if (e.detail.path === "/live/steer") e.detail.parameters["spec"] = syncSpec();
    });
    // failed live requests answer an error partial with a 4xx/5xx status: show it where the result goes
    document.body.addEventListener("htmx:beforeSwap", (e) => {
      const id = e.detail.target && e.detail.target.id;
      if ((id === "live-analysis" || id === "live-steer-result") && e.detail.xhr.status >= 400) {
        e.detail.shouldSwap = true;
        e.detail.isError = false;
      }
    });
    document.body.addEventListener("htmx:afterSwap", (e) => {
      if (e.detail.target && e.detail.target.id === "live-analysis") setupReadout();
    });
    showPanel();
    loadPresets();
    const asked = new URLSearchParams(location.search).get("spec");
    if (asked) {
      try {
        applySpec(JSON.parse(asked));
      } catch (err) {
        /* a malformed ?spec= leaves the panel as it is */
      }
    }
    syncSpec();
  }

  // --- the clip -------------------------------------------------------------------------------------------

  function clipChosen() {
    const file = $("#live-file").files[0];
    const has = Boolean(file);
    $("#live-analyze").disabled = !has;
    $("#live-steer").disabled = !has;
    $("#live-file-name").textContent = has ? `${file.name} (${(file.size / 1024).toFixed(0)} KB)` : "no clip yet";
    const preview = $("#live-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    if (has) {
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    }
  }

  let recorder = null;

  async function toggleRecording() {
    const button = $("#live-record");
    if (recorder) {
      recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      $("#live-file-name").textContent = "this browser cannot record audio: choose a file instead";
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      $("#live-file-name").textContent = `no microphone: ${err.message}`;
      return;
    }
    const type = MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    recorder.addEventListener("dataavailable", (e) => chunks.push(e.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((t) => t.stop());
      const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      recorder = null;
      button.textContent = "● Record";
      button.setAttribute("aria-pressed", "false");
      const transfer = new DataTransfer();
      transfer.items.add(new File([blob], "recording.webm", { type: blob.type }));
      $("#live-file").files = transfer.files;
      clipChosen();
      $("#live-analyze").click();
    });
    recorder.start();
    button.textContent = "■ Stop";
    button.setAttribute("aria-pressed", "true");
    $("#live-file-name").textContent = "recording… (Whisper hears at most 30 s)";
  }

  // --- the steering spec ----------------------------------------------------------------------------------

  function targetKind() {
    const checked = $("input[name=live-target-kind]:checked");
    return checked ? checked.value : "features";
  }

  function showPanel() {
    const kind = targetKind();
    $("#live-by-preset").hidden = kind !== "preset";
    $("#live-by-language").hidden = kind !== "language";
    $("#live-by-features").hidden = kind !== "features";
    syncSpec();
  }

  function buildSpec() {
    const kind = targetKind();
    if (kind === "preset") {
      return { preset: $("#live-preset").value, strength: parseFloat($("#live-preset-strength").value) };
    }
    if (kind === "language") {
      const method = $("#live-method").value;
      return {
        toward_language: $("#live-language").value,
        method,
        ...(method === "sae" ? { rank: $("#live-rank").value } : {}),
        strength: parseFloat($("#live-strength").value),
        n_features: parseInt($("#live-n-features").value, 10) || 10,
      };
    }
    const features = $$(".live-feature").map((li) => ({
      id: parseInt(li.dataset.feature, 10),
      strength: parseFloat($("input[type=range]", li).value),
    }));
    return { features, mode: $("#live-mode").value, scale: $("#live-scale").value, frames: $("#live-frames").value };
  }

  // --- presets and their curves (GET /api/v1/presets) ----------------------------------------------------

  let presets = [];

  async function loadPresets() {
    try {
      const res = await fetch("/api/v1/presets");
      presets = res.ok ? (await res.json()).presets : [];
    } catch (err) {
      presets = [];
    }
    const select = $("#live-preset");
    select.replaceChildren(
      ...presets.map((p) => Object.assign(document.createElement("option"), { value: p.id, textContent: p.id }))
    );
    $("#live-no-presets").hidden = presets.length > 0;
    if (!presets.length && targetKind() === "preset") {
      $("input[name=live-target-kind][value=features]").checked = true;
      showPanel();
    }
    if (presets.length) presetChosen();
  }

  function presetChosen() {
    const preset = presets.find((p) => p.id === $("#live-preset").value);
    if (!preset) return;
    $("#live-preset-strength").value = preset.default_strength;
    $("#live-preset-about").textContent = `${preset.description} Default strength ${preset.default_strength} (best ${preset.score.replace(/_/g, " ")} on ${preset.clips} training clips).`;
    drawCurve(preset);
    syncSpec();
  }

  function drawCurve(preset) {
    window.steeringCurves.draw($("#live-preset-curve"), preset);
    const table = $("#live-curve-table");
    table.replaceChildren(window.steeringCurves.table(preset));
    table.hidden = false;
  }

  function applySpec(spec) {
    if (spec.preset) {
      $("input[name=live-target-kind][value=preset]").checked = true;
      $("#live-preset").value = spec.preset;
      if (spec.strength !== undefined) $("#live-preset-strength").value = spec.strength;
    } else if (spec.toward_language) {
      $("input[name=live-target-kind][value=language]").checked = true;
      $("#live-language").value = spec.toward_language;
      if (spec.method) $("#live-method").value = spec.method;
      if (spec.rank) $("#live-rank").value = spec.rank;
      if (spec.strength !== undefined) $("#live-strength").value = spec.strength;
      if (spec.n_features) $("#live-n-features").value = spec.n_features;
    } else if (Array.isArray(spec.features)) {
      spec.features.forEach((f) => addFeature(f.id, ""));
      $$(".live-feature").forEach((li) => {
        const f = spec.features.find((g) => g.id === parseInt(li.dataset.feature, 10));
        if (f && f.strength !== undefined) $("input[type=range]", li).value = f.strength;
      });
      if (spec.mode) $("#live-mode").value = spec.mode;
      if (spec.frames) $("#live-frames").value = spec.frames;
    }
    showPanel();
  }

  function syncSpec() {
    $$(".live-feature").forEach((li) => ($("output", li).textContent = $("input[type=range]", li).value));
    $("#live-strength-out").textContent = $("#live-strength").value;
    $("#live-preset-strength-out").textContent = $("#live-preset-strength").value;
    $("#live-features-empty").hidden = $$(".live-feature").length > 0;
    const spec = JSON.stringify(buildSpec());
    $("#live-spec").value = spec;
    return spec;
  }

  function addFeature(id, label) {
    if ($(`.live-feature[data-feature="${id}"]`)) return;
    const li = document.createElement("li");
    li.className = "live-feature";
    li.dataset.feature = String(id);
    const link = document.createElement("a");
    link.href = `/features/${id}`;
    link.textContent = `#${id}`;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label || "";
    const range = document.createElement("input");
    Object.assign(range, { type: "range", min: "-3", max: "3", step: "0.05", value: "0.5" });
    range.setAttribute("aria-label", `strength of feature ${id}`);
    const out = document.createElement("output");
    const remove = document.createElement("button");
    Object.assign(remove, { type: "button", className: "linklike live-remove", title: "remove", textContent: "✕" });
    li.append(link, " ", name, range, out, remove);
    $("#live-features").append(li);
    $("input[name=live-target-kind][value=features]").checked = true;
    showPanel();
  }

  function onClick(e) {
    const add = e.target.closest(".live-add");
    if (add) addFeature(parseInt(add.dataset.feature, 10), add.dataset.label);
    const remove = e.target.closest(".live-remove");
    if (remove) {
      remove.closest(".live-feature").remove();
      syncSpec();
    }
    const hit = e.target.closest(".live-results li");
    if (hit) {
      addFeature(parseInt(hit.dataset.feature, 10), hit.dataset.label);
      $("#live-feature-results").replaceChildren();
      $("#live-feature-search").value = "";
    }
  }

  function setupSearch() {
    const input = $("#live-feature-search");
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => search(input.value.trim()), 200);
    });
  }

  async function search(q) {
    const list = $("#live-feature-results");
    if (!q) {
      list.replaceChildren();
      return;
    }
    let items = [];
    try {
      const res = await fetch(`/api/v1/features?${new URLSearchParams({ q, limit: "8" })}`);
      if (res.ok) items = (await res.json()).items || [];
    } catch (err) {
      items = [];
    }
    if (/^\d+$/.test(q) && !items.some((f) => f.id === parseInt(q, 10))) items.unshift({ id: parseInt(q, 10), label: "" });
    list.replaceChildren(
      ...items.map((f) => {
        const li = document.createElement("li");
        li.dataset.feature = String(f.id);
        li.dataset.label = f.label || "";
        li.setAttribute("role", "option");
        li.textContent = `#${f.id} ${f.label || ""}`;
        return li;
      })
    );
  }

  // --- hover readout over the analysed clip ---------------------------------------------------------------

  function setupReadout() {
    const data = $("#live-frames-data");
    const readout = $("#live-readout");
    if (!data || !readout) return;
    const frames = JSON.parse(data.textContent);
    const labels = {};
    $$(".live-add").forEach((b) => (labels[b.dataset.feature] = b.dataset.label));
    $$(".live-spectrogram, .live-heatmap").forEach((img) =>
      img.addEventListener("mousemove", (e) => {
        const box = img.getBoundingClientRect();
        const i = Math.min(frames.length - 1, Math.max(0, Math.floor(((e.clientX - box.left) / box.width) * frames.length)));
        const frame = frames[i];
        if (!frame) return;
        const parts = frame.features.map(([id, act]) => `#${id}${labels[id] ? " " + labels[id] : ""} (${act})`);
        readout.textContent = `${frame.t.toFixed(2)} s: ${parts.join(", ") || "no feature fires"}`;
      })
    );
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
