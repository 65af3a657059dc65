// lists.js: named lists of features kept in the browser (localStorage), saved from any feature or span panel
// (buttons with data-save-feature, or l on a feature page), shown, exported and imported as JSON on /lists.
(function () {
  "use strict";

  const KEY = "whisper-atlas.lists";
  const FORMAT = "whisper-atlas-feature-list";
  const MAX_FEATURES = 10000;

  function load() {
    try {
      const raw = JSON.parse(localStorage.getItem(KEY) || "{}");
      return raw && typeof raw === "object" && raw.lists && typeof raw.lists === "object" ? raw.lists : {};
    } catch (err) {
      return {};
    }
  }

  function store(lists) {
    localStorage.setItem(KEY, JSON.stringify({ version: 1, lists }));
  }

  function add(name, feature) {
    const lists = load();
    const items = lists[name] || [];
    if (!items.some((f) => f.id === feature.id)) items.push({ id: feature.id, label: feature.label || "" });
    lists[name] = items;
    store(lists);
  }

  function remove(name, id) {
    const lists = load();
    if (!lists[name]) return;
    lists[name] = lists[name].filter((f) => f.id !== id);
    store(lists);
  }

  function drop(name) {
    const lists = load();
    delete lists[name];
    store(lists);
  }

  // A list from imported JSON: {format, name, features: [{id, label}]} (ids are whole numbers >= 0).
  function parse(text) {
    const data = JSON.parse(text);
    if (!data || typeof data !== "object" || typeof data.name !== "string" || !Array.isArray(data.features)) {
      throw new Error('expected {"name": "...", "features": [{"id": 12, "label": "..."}]}');
    }
    const name = data.name.trim().slice(0, 80);
    if (!name) throw new Error("the list has no name");
    if (data.features.length > MAX_FEATURES) throw new Error(`at most ${MAX_FEATURES} features per list`);
    const features = data.features.map((f) => {
      const id = typeof f === "number" ? f : f && f.id;
      if (!Number.isInteger(id) || id < 0) throw new Error(`not a feature id: ${JSON.stringify(f).slice(0, 40)}`);
      return { id, label: typeof f.label === "string" ? f.label.slice(0, 200) : "" };
    });
    return { name, features };
  }

  function exportList(name) {
    const body = JSON.stringify({ format: FORMAT, version: 1, name, features: load()[name] || [] }, null, 1);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    link.download = `${name.replace(/[^\w.-]+/g, "_") || "list"}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // --- the save dialog --------------------------------------------------------------------------------------

  function dialog() {
    let box = document.getElementById("save-dialog");
    if (box) return box;
    box = document.createElement("dialog");
    box.id = "save-dialog";
    box.className = "save-dialog";
    box.innerHTML =
      '<form method="dialog"><h2>Save to a list</h2><p class="muted small" data-what></p>' +
      '<div data-choices></div><label>new list <input type="text" name="new" maxlength="80" placeholder="name"></label>' +
      '<div class="row"><button value="save" class="button">Save</button><button value="cancel" class="button">Cancel</button></div>' +
      '<p class="explain">Lists live in this browser; export them as JSON on <a href="/lists">Lists</a>.</p></form>';
    document.body.append(box);
    box.addEventListener("close", () => {
      if (box.returnValue !== "save" || !box.feature) return;
      const typed = box.querySelector("input[name=new]").value.trim();
      const picked = box.querySelector("input[name=list]:checked");
      const name = typed || (picked ? picked.value : "saved");
      add(name, box.feature);
      if (window.AtlasURL) window.AtlasURL.toast(`#${box.feature.id} saved to “${name}”`);
    });
    return box;
  }

  function openSave(feature) {
    const box = dialog();
    box.feature = feature;
    box.querySelector("[data-what]").textContent = `#${feature.id} ${feature.label || ""}`;
    const names = Object.keys(load());
    const choices = box.querySelector("[data-choices]");
    choices.replaceChildren(
      ...(names.length ? names : ["saved"]).map((name, i) => {
        const label = document.createElement("label");
        const input = Object.assign(document.createElement("input"), { type: "radio", name: "list", value: name, checked: i === 0 });
        label.append(input, " ", name);
        return label;
      })
    );
    box.querySelector("input[name=new]").value = "";
    box.showModal();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-save-feature]");
    if (!button) return;
    event.preventDefault();
    openSave({ id: parseInt(button.dataset.saveFeature, 10), label: button.dataset.label || "" });
  });

  document.addEventListener("keydown", (event) => {
    if (event.key !== "l" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea, [contenteditable], dialog")) return;
    const button = document.querySelector("[data-feature-page] [data-save-feature], [data-save-feature].primary-save");
    if (button) button.click();
  });

  // --- the /lists page ------------------------------------------------------------------------------------

  function renderPage(root) {
    const lists = load();
    const names = Object.keys(lists).sort();
    const grid = root.querySelector("[data-lists]");
    root.querySelector("[data-empty]").hidden = names.length > 0;
    grid.replaceChildren(
      ...names.map((name) => {
        const card = document.createElement("section");
        card.className = "card";
        card.dataset.list = name;
        const title = document.createElement("h2");
        title.textContent = `${name} `;
        const count = document.createElement("span");
        count.className = "muted small";
        count.textContent = `${lists[name].length} features`;
        title.append(count);
        const ol = document.createElement("ol");
        lists[name].forEach((f) => {
          const li = document.createElement("li");
          const link = Object.assign(document.createElement("a"), { href: `/features/${f.id}` });
          link.textContent = `#${f.id} ${f.label || ""}`;
          const gone = Object.assign(document.createElement("button"), { type: "button", className: "linklike", title: "remove from the list" });
          gone.textContent = " ✕";
          gone.dataset.removeFeature = String(f.id);
          li.append(link, gone);
          ol.append(li);
        });
        const actions = document.createElement("div");
        actions.className = "actions";
        const onMap = Object.assign(document.createElement("a"), { className: "button", href: `/map?list=${encodeURIComponent(name)}` });
        onMap.textContent = "On the map";
        const exp = Object.assign(document.createElement("button"), { type: "button", className: "button" });
        exp.textContent = "Export JSON";
        exp.dataset.exportList = name;
        const del = Object.assign(document.createElement("button"), { type: "button", className: "button" });
        del.textContent = "Delete list";
        del.dataset.deleteList = name;
        actions.append(onMap, " ", exp, " ", del);
        card.append(title, ol, actions);
        return card;
      })
    );
  }

  function initPage() {
    const root = document.getElementById("lists-page");
    if (!root) return;
    renderPage(root);
    root.addEventListener("click", (event) => {
      const card = event.target.closest("[data-list]");
      const target = event.target;
      if (target.dataset.removeFeature && card) remove(card.dataset.list, parseInt(target.dataset.removeFeature, 10));
      else if (target.dataset.exportList) return exportList(target.dataset.exportList);
      else if (target.dataset.deleteList && confirm(`Delete the list “${target.dataset.deleteList}”?`)) drop(target.dataset.deleteList);
      else return;
      renderPage(root);
    });
    const input = root.querySelector("#list-import");
    const status = root.querySelector("[data-import-status]");
    input.addEventListener("change", async () => {
      const file = input.files[0];
      if (!file) return;
      try {
        const list = parse(await file.text());
        list.features.forEach((f) => add(list.name, f));
        status.textContent = `Imported “${list.name}” (${list.features.length} features).`;
        status.classList.remove("error");
      } catch (err) {
        status.textContent = `Not a feature list: ${err.message}`;
        status.classList.add("error");
      }
      input.value = "";
      renderPage(root);
    });
  }

  window.AtlasLists = { load, add, remove, drop, parse, openSave };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", initPage);
  else initPage();
})();
