// earshot's web page: search as you type, listen from the matching second, find more like it.
// Plain browser JavaScript as ES modules, no build step and nothing loaded from elsewhere. This
// module wires the page together; see docs/architecture.md for what each module does.
import { api, features } from "./api.js";
import { el, state } from "./state.js";
import {
  addTag,
  filtersFromUrl,
  loadMenus,
  onFilterChange,
  removeTag,
  restoreFilters,
} from "./filters.js";
import { setStatus, showError, showNote, showUntrained } from "./messages.js";
import {
  applyWeak,
  clipUrl,
  clearResults,
  render,
  shownItems,
  toggleSpans,
  toggleWeak,
} from "./results.js";
import { focusHit, moreResults, rerun, runSearch, abort } from "./search.js";
import { writeUrl } from "./history.js";
import { initPlayer, playHit, stop, toggle } from "./player.js";
import { redrawAll } from "./wave.js";
import { hours, make, plural, store } from "./util.js";

const DEBOUNCE_MS = 220;

const searchText = (history) => runSearch({ kind: "text", text: el.q.value.trim() }, { history });
const searchSimilar = (hit, history = "push") =>
  runSearch(
    { kind: "similar", hit: { file_id: hit.file_id, segment_id: hit.segment_id } },
    { history },
  );
const searchUpload = (file) => runSearch({ kind: "upload", file }, { history: "push" });

onFilterChange(rerun);

// --- the results list: one listener for every hit's buttons ---------------------------------

const indexOf = (li) => Number(li.dataset.index);

el.results.addEventListener("click", (e) => {
  const li = e.target.closest(".hit");
  if (!li) return;
  const i = indexOf(li);
  const hit = state.hits[i];
  const button = e.target.closest("[data-action]");
  const action = button ? button.dataset.action : null;
  if (action === "play") toggle(i);
  else if (action === "more") searchSimilar(hit);
  else if (action === "tag") addTag(button.dataset.tag);
  else if (action === "spans") toggleSpans(li);
  else if (action === "copy") copyPath(hit);
  else if (action === "span") {
    const span = { start: Number(button.dataset.start), end: Number(button.dataset.end) };
    playHit(i, span.start, span);
  } else if (action === "seek") {
    const rect = button.getBoundingClientRect();
    const at = ((e.clientX - rect.left) / rect.width) * hit.duration;
    playHit(i, Math.max(0, Math.min(hit.duration, at)), { start: 0, end: hit.duration });
  } else if (action === "download") {
    return; // the link downloads
  }
  if (action !== "span" && action !== "spans") li.focus({ preventScroll: !!action });
});

// Roving focus: the focused hit is the one Tab returns to.
el.results.addEventListener("focusin", (e) => {
  const li = e.target.closest(".hit");
  if (!li) return;
  for (const other of state.items) other.tabIndex = other === li ? 0 : -1;
});

// Drag a hit out of the browser as a file (Chromium: onto the desktop or a DAW).
el.results.addEventListener("dragstart", (e) => {
  const li = e.target.closest && e.target.closest(".hit");
  if (!li || !e.dataTransfer) return;
  const hit = state.hits[indexOf(li)];
  const base = window.location.origin;
  const span = state.offers.clip;
  const url = span ? base + clipUrl(hit, hit.start, hit.end) : `${base}/api/audio/${hit.file_id}`;
  const stem = hit.name.replace(/\.[^.]+$/, "");
  const name = span ? `${stem}_${hit.start.toFixed(2)}-${hit.end.toFixed(2)}.wav` : hit.name;
  const type = span ? "audio/wav" : "application/octet-stream";
  e.dataTransfer.effectAllowed = "copy";
  e.dataTransfer.setData("DownloadURL", `${type}:${name}:${url}`);
  e.dataTransfer.setData("text/uri-list", url);
  e.dataTransfer.setData("text/plain", hit.path);
});

async function copyPath(hit) {
  try {
    await navigator.clipboard.writeText(hit.path);
  } catch (_) {
    // No clipboard API (plain http on another host): the old way, through a selection.
    const area = make("textarea", { class: "visually-hidden", readonly: true });
    area.value = hit.path;
    document.body.append(area);
    area.select();
    let ok;
    try {
      ok = document.execCommand("copy");
    } catch (_) {
      ok = false;
    }
    area.remove();
    if (!ok) {
      showNote(`Copy this path: ${hit.path}`);
      return;
    }
  }
  setStatus(`Copied the path of “${hit.name}”: ${hit.path}`);
}

el.weak.addEventListener("click", toggleWeak);
el.more.addEventListener("click", moreResults);
el.tagChosen.addEventListener("click", (e) => {
  const chip = e.target.closest(".tag-chip");
  if (chip) removeTag(chip.dataset.tag);
});

// --- view: compact list, sort, auto-preview -------------------------------------------------

function setCompact(on) {
  state.compact = !!on;
  store.set("compact", state.compact);
  el.results.classList.toggle("is-compact", state.compact);
  el.view.setAttribute("aria-pressed", state.compact ? "true" : "false");
  el.view.textContent = state.compact ? "Cards" : "List";
  el.view.title = state.compact ? "Show each hit as a card" : "Show hits as a compact list";
  redrawAll();
}
el.view.addEventListener("click", () => setCompact(!state.compact));

function setAutoplay(on) {
  state.autoplay = !!on;
  store.set("autoplay", state.autoplay);
  el.autoplay.checked = state.autoplay;
}
el.autoplay.addEventListener("change", () => setAutoplay(el.autoplay.checked));
el.sort.addEventListener("change", rerun);

// --- keyboard ---------------------------------------------------------------------------------

function moveTo(position) {
  focusHit(position);
  if (!state.autoplay) return;
  const li = document.activeElement && document.activeElement.closest(".hit");
  if (li) playHit(indexOf(li), state.hits[indexOf(li)].start);
}

document.addEventListener("keydown", (e) => {
  const target = e.target;
  const typing =
    target instanceof HTMLInputElement ||
    target instanceof HTMLSelectElement ||
    target instanceof HTMLTextAreaElement;
  if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    el.q.focus();
    el.q.select();
    return;
  }
  if (e.key === "Escape" && !el.player.paused) {
    stop();
    return;
  }
  const li = target.closest && target.closest(".hit");
  if (target === el.q && e.key === "ArrowDown" && shownItems().length) {
    e.preventDefault();
    moveTo(0);
    return;
  }
  if (!li || target.tagName === "BUTTON" || target.tagName === "A") return;
  const items = shownItems();
  const at = items.indexOf(li);
  const i = indexOf(li);
  if (e.key === "ArrowDown" || e.key === "j") {
    e.preventDefault();
    if (at < items.length - 1) moveTo(at + 1);
  } else if (e.key === "ArrowUp" || e.key === "k") {
    e.preventDefault();
    if (at === 0) el.q.focus();
    else moveTo(at - 1);
  } else if (e.key === "Home") {
    e.preventDefault();
    moveTo(0);
  } else if (e.key === "End") {
    e.preventDefault();
    moveTo(items.length - 1);
  } else if (e.key === " " || e.key === "Enter") {
    e.preventDefault();
    toggle(i);
  } else if (e.key === "m" || e.key === "M") {
    e.preventDefault();
    searchSimilar(state.hits[i]);
  } else if (e.key === "l" || e.key === "L") {
    e.preventDefault();
    el.loop.click();
  } else if (e.key === "c" || e.key === "C") {
    e.preventDefault();
    copyPath(state.hits[i]);
  }
});

// --- search box, filters, example files --------------------------------------------------------

let timer = 0;
el.q.addEventListener("input", () => {
  clearTimeout(timer);
  state.typing = true; // a search is about to start
  timer = setTimeout(() => {
    state.typing = false;
    searchText("replace");
  }, DEBOUNCE_MS);
});
el.form.addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(timer);
  state.typing = false;
  searchText("push");
});
el.q.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && el.q.value) {
    el.q.value = "";
    abort();
    clearResults();
  }
});
for (const select of [el.duration, el.format, el.rate, el.channels]) {
  select.addEventListener("change", rerun);
}
el.folder.addEventListener("change", rerun);
el.tag.addEventListener("change", () => addTag(el.tag.value));
el.tag.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    e.preventDefault();
    addTag(el.tag.value);
  }
});
el.back.addEventListener("click", () => window.history.back());

el.chips.addEventListener("click", (e) => {
  const chip = e.target.closest(".chip");
  if (!chip) return;
  el.q.value = chip.textContent;
  searchText("push");
});

el.pick.addEventListener("click", () => el.file.click());
el.file.addEventListener("change", () => {
  if (el.file.files.length) searchUpload(el.file.files[0]);
  el.file.value = "";
});

let dragDepth = 0;
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
window.addEventListener("dragenter", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth += 1;
  el.drop.hidden = false;
});
window.addEventListener("dragover", (e) => {
  if (hasFiles(e)) e.preventDefault();
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) el.drop.hidden = true;
});
window.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  el.drop.hidden = true;
  const file = e.dataTransfer.files[0];
  if (file) searchUpload(file);
});

// --- the address bar ------------------------------------------------------------------------

window.addEventListener("popstate", (event) => {
  const saved = event.state;
  if (!saved) return;
  abort();
  restoreFilters(saved);
  el.q.value = saved.query || "";
  if (saved.sort) el.sort.value = saved.sort;
  if (saved.kind === "none" || !saved.data) {
    state.last = null;
    clearResults();
    return;
  }
  if (saved.kind === "similar") {
    state.last = { kind: "similar", hit: { file_id: saved.file, segment_id: saved.segment } };
  } else if (saved.kind === "text") state.last = { kind: "text", text: saved.q };
  render(saved.data, { kind: saved.kind, text: saved.q });
  el.more.hidden = true;
});

function startFromUrl() {
  const p = new URLSearchParams(window.location.search);
  filtersFromUrl(p);
  if (state.offers.sort && p.get("sort")) el.sort.value = p.get("sort");
  if (p.get("like")) {
    searchSimilar({ file_id: p.get("like"), segment_id: p.get("segment") }, "replace");
  } else if (p.get("q") || state.tags.length) {
    el.q.value = p.get("q") || "";
    searchText("replace");
  } else {
    if (p.get("example")) {
      showNote(`Drop “${p.get("example")}” on the page again to search by it.`);
    }
    writeUrl({ kind: "none" }, "replace");
    el.q.focus();
  }
}

// --- start ------------------------------------------------------------------------------------

/** What this server offers beyond the basics, from its OpenAPI description. */
async function readOffers() {
  const f = await features();
  const offers = state.offers;
  offers.params = {
    search: f.params("/api/search"),
    similar: f.params("/api/similar/{file_id}"),
    like: f.params("/api/search/like", "post"),
  };
  const search = offers.params.search;
  offers.clip = f.routes.has("/api/clip/{file_id}");
  offers.sort = search.has("sort");
  // The query syntax (sr:, ch:, dur:, -word...) came with paging and spans: a server that takes
  // `spans` reads it.
  offers.syntax = search.has("spans");
  el.sortLabel.hidden = !offers.sort;
}

async function loadExamples() {
  try {
    const { examples } = await api("/api/examples");
    el.chips.replaceChildren(
      ...examples.map((text) => make("button", { type: "button", class: "chip", text })),
    );
    el.chips.hidden = examples.length === 0;
  } catch (_) {
    el.chips.hidden = true; // nothing to suggest beats suggesting what the model does not know
  }
}

async function start() {
  if (window.matchMedia("(max-width: 640px)").matches) el.q.placeholder = "Describe a sound";
  setCompact(state.compact);
  setAutoplay(state.autoplay);
  initPlayer();
  await readOffers();
  startFromUrl();
  // Exposed for tests and the curious: what is on screen (set once the page is ready).
  window.earshot = { state, applyWeak };
  loadExamples();
  try {
    const stats = await api("/api/stats");
    const c = stats.catalogue;
    state.limits = { ...state.limits, ...stats.server.limits };
    state.untrained = stats.model.untrained;
    const model = stats.model.name ? ` · model ${stats.model.name}` : "";
    el.summary.textContent = `Searching ${plural(c.files_ok, "recording")} (${hours(c.hours)})${model}.`;
    if (c.files_ok === 0) {
      el.summary.textContent = "The catalogue is empty: run `earshot index FOLDER` first.";
    }
    if (c.files_skipped > 0) {
      // The files indexing skipped, and why: `earshot skipped` lists the same.
      const skipped = make("a", {
        href: "/api/skipped",
        id: "skipped-count",
        text: `${plural(c.files_skipped, "file")} could not be indexed`,
      });
      el.summary.append(" ", skipped, ".");
    }
    if (state.untrained) showUntrained();
  } catch (err) {
    showError(`The server did not answer: ${err.message}`);
  }
  await loadMenus();
}

let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(redrawAll, 100);
});

start();
