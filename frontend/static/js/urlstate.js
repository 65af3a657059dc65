// urlstate.js: what the user sees lives in the URL (the selected span, the map's view, filters), so a link
// reproduces it; "copy link" (button or c) copies it. Other modules call AtlasURL.set to record their state.
(function () {
  "use strict";

  // Replace the current history entry's query with `changes` merged in (null or "" removes a key).
  function set(changes) {
    const url = new URL(location.href);
    Object.entries(changes).forEach(([key, value]) => {
      if (value === null || value === undefined || value === "") url.searchParams.delete(key);
      else url.searchParams.set(key, String(value));
    });
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }

  function get(key) {
    return new URLSearchParams(location.search).get(key);
  }

  let toastTimer = 0;
  function toast(text) {
    let box = document.getElementById("toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "toast";
      box.className = "toast";
      box.setAttribute("role", "status");
      document.body.append(box);
    }
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 2200);
  }

  async function copyLink() {
    const link = location.href;
    try {
      await navigator.clipboard.writeText(link);
      toast("Link copied: it reopens this view");
    } catch (err) {
      window.prompt("Copy this link (it reopens this view):", link);
    }
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-action=copy-link]")) copyLink();
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (event.target.closest && event.target.closest("input, select, textarea, [contenteditable], dialog")) return;
    if (event.key === "c") copyLink();
    else if (event.key === "m") {
      const here = document.querySelector("[data-feature-page]");
      location.href = here ? `/map?f=${here.dataset.featurePage}` : "/map";
    }
  });

  window.AtlasURL = { set, get, toast, copyLink };
})();
