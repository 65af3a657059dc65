// Whisper Atlas: audio playback with a moving playhead over the spectrogram, and keyboard shortcuts.
// No framework; htmx (when vendored) handles partial page updates. Everything degrades to plain links.
(function () {
  "use strict";

  const player = document.getElementById("player");
  let playing = null; // {button, figure, audio, start, end}
  let frame = 0;

  function figureOf(el) {
    return el && el.dataset.figure ? document.getElementById(el.dataset.figure) : null;
  }

  // Every .playhead inside the figure (the clip page has one over the spectrogram and one per timeline row).
  function setPlayhead(figure, fraction) {
    if (!figure) return;
    const left = fraction === null ? "" : (Math.min(Math.max(fraction, 0), 1) * 100).toFixed(2) + "%";
    figure.querySelectorAll(".playhead").forEach((head) => {
      head.hidden = fraction === null;
      head.style.left = left;
    });
  }

  function tick() {
    if (!playing) return;
    const span = playing.end - playing.start;
    const t = playing.audio === player ? player.currentTime : playing.audio.currentTime - playing.start;
    setPlayhead(playing.figure, span > 0 ? t / span : 0);
    frame = requestAnimationFrame(tick);
  }

  function stop() {
    if (!playing) return;
    cancelAnimationFrame(frame);
    if (playing.audio === player) player.pause();
    setPlayhead(playing.figure, null);
    if (playing.button) playing.button.classList.remove("playing");
    const item = playing.figure && playing.figure.closest("li.ex");
    if (item) item.classList.remove("playing");
    playing = null;
  }

  function start(state) {
    playing = state;
    if (state.button) state.button.classList.add("playing");
    const item = state.figure && state.figure.closest("li.ex");
    if (item) item.classList.add("playing");
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(tick);
  }

  // Example windows share one <audio>: the button's href is the WAV of its window.
  function playWindow(button) {
    const figure = figureOf(button);
    const same = playing && playing.button === button;
    stop();
    if (same || !player) return;
    player.src = button.href;
    const state = {
      button: button,
      figure: figure,
      audio: player,
      start: parseFloat(figure ? figure.dataset.start : 0) || 0,
      end: parseFloat(figure ? figure.dataset.end : 0) || 0,
    };
    player.play().then(() => start(state)).catch(() => stop());
  }

  if (player) player.addEventListener("ended", stop);

  // The clip page's own <audio controls>: follow it with the playhead.
  const clipAudio = document.getElementById("clip-audio");
  if (clipAudio) {
    const figure = figureOf(clipAudio);
    const follow = () => {
      if (playing && playing.audio === clipAudio) return;
      stop();
      start({ button: null, figure: figure, audio: clipAudio, start: 0, end: clipAudio.duration || parseFloat(figure.dataset.end) });
    };
    clipAudio.addEventListener("play", follow);
    clipAudio.addEventListener("pause", () => { if (playing && playing.audio === clipAudio) { cancelAnimationFrame(frame); playing = null; } });
    clipAudio.addEventListener("ended", () => setPlayhead(figure, null));
    clipAudio.addEventListener("seeked", () => setPlayhead(figure, clipAudio.currentTime / (clipAudio.duration || 1)));
    const t = parseFloat(new URLSearchParams(location.search).get("t"));
    if (t > 0) clipAudio.addEventListener("loadedmetadata", () => { clipAudio.currentTime = t; }, { once: true });
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("a.play");
    if (button) {
      event.preventDefault();
      playWindow(button);
      return;
    }
    const seek = event.target.closest("[data-seek]");
    if (seek && clipAudio) {
      clipAudio.currentTime = parseFloat(seek.dataset.seek) || 0;
      clipAudio.play();
      return;
    }
    const help = event.target.closest("[data-action=help]");
    if (help) { document.getElementById("help").showModal(); return; }
    const row = event.target.closest("tr[data-href]");
    if (row && !event.target.closest("a")) location.href = row.dataset.href;
  });

  // --- keyboard -------------------------------------------------------------------------------------
  function rows() {
    const table = document.querySelector("table[data-nav=rows]");
    return table ? Array.from(table.querySelectorAll("tbody tr[data-href]")) : [];
  }

  function select(delta) {
    const all = rows();
    if (!all.length) return false;
    let i = all.findIndex((r) => r.classList.contains("selected"));
    if (i >= 0) all[i].classList.remove("selected");
    i = i < 0 ? (delta > 0 ? 0 : all.length - 1) : Math.min(Math.max(i + delta, 0), all.length - 1);
    all[i].classList.add("selected");
    all[i].scrollIntoView({ block: "nearest" });
    return true;
  }

  function follow(rel) {
    const link = document.querySelector(`a[rel=${rel}]`);
    if (!link) return;
    if (window.htmx && link.hasAttribute("hx-get")) link.click();
    else location.href = link.href;
  }

  // Clip tiers: one tab stop per tier (roving tabindex); arrows step along a tier or to the interval of the
  // tier above/below nearest in time; Enter/Space (a button's click) plays from the interval.
  function moveInTier(button, key) {
    const tier = button.closest(".tier");
    const items = Array.from(tier.querySelectorAll("button.iv"));
    let target = null;
    const i = items.indexOf(button);
    if (key === "ArrowRight") target = items[i + 1];
    else if (key === "ArrowLeft") target = items[i - 1];
    else if (key === "Home") target = items[0];
    else if (key === "End") target = items[items.length - 1];
    else {
      const tiers = Array.from(tier.closest(".tiers").querySelectorAll(".tier"));
      const other = tiers[tiers.indexOf(tier) + (key === "ArrowDown" ? 1 : -1)];
      const choices = other ? Array.from(other.querySelectorAll("button.iv")) : [];
      const t = parseFloat(button.dataset.seek) || 0;
      let best = Infinity;
      choices.forEach((c) => {
        const d = Math.abs((parseFloat(c.dataset.seek) || 0) - t);
        if (d < best) { best = d; target = c; }
      });
    }
    if (!target) return;
    target.closest(".tier").querySelectorAll("button.iv").forEach((b) => { b.tabIndex = -1; });
    target.tabIndex = 0;
    target.focus();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const interval = event.target.closest && event.target.closest(".tier button.iv");
    if (interval && ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"].includes(event.key)) {
      event.preventDefault();
      moveInTier(interval, event.key);
      return;
    }
    const typing = event.target.closest("input, select, textarea, [contenteditable]");
    if (typing) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const listing = rows().length > 0;
    switch (event.key) {
      case "/": {
        const search = document.getElementById("search");
        if (search) { event.preventDefault(); search.focus(); search.select(); }
        break;
      }
      case "?": document.getElementById("help").showModal(); break;
      case "r": location.href = "/features/random"; break;
      case "j": case "ArrowDown":
        if (listing) { event.preventDefault(); select(1); } else if (event.key === "j") follow("next");
        break;
      case "k": case "ArrowUp":
        if (listing) { event.preventDefault(); select(-1); } else if (event.key === "k") follow("prev");
        break;
      case "ArrowRight": follow("next"); break;
      case "ArrowLeft": follow("prev"); break;
      case "Enter": {
        const row = document.querySelector("tr.selected[data-href]");
        if (row) location.href = row.dataset.href;
        break;
      }
      case "p": {
        if (clipAudio) { if (clipAudio.paused) clipAudio.play(); else clipAudio.pause(); break; }
        const first = (playing && playing.button) || document.querySelector("a.play");
        if (first) playWindow(first);
        break;
      }
      case "Escape": stop(); break;
    }
  });

  document.addEventListener("htmx:afterSwap", () => stop());
})();
