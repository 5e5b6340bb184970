// The filters beside the search box: folder, length, format, sample rate, channels and sound
// tags. They turn into query parameters (filterParams) and into the address bar.
import { api } from "./api.js";
import { el, state } from "./state.js";
import { make, plural, rate, channelsText } from "./util.js";

let changed = () => {};

/** `fn` runs when a filter changes (app.js re-runs the search). */
export function onFilterChange(fn) {
  changed = fn;
}

const isAbsolute = (path) => /^([\\/]|[A-Za-z]:[\\/])/.test(path);

/**
 * The folder a typed value means: an absolute path as it is; the shortened form hits show
 * ("…/street/rain") or a relative one ("street/rain") as the one catalogued folder it names, if
 * exactly one does (else unchanged, and the server says what is wrong).
 */
export function resolveFolder(value) {
  const typed = String(value || "").trim();
  if (!typed || isAbsolute(typed)) return typed;
  const tail = typed
    .replace(/^(…|\.\.\.)[\\/]?/, "")
    .replace(/^\.[\\/]/, "")
    .replace(/[\\/]+$/, "");
  if (!tail) return typed;
  const want = `/${tail.replace(/\\/g, "/")}`;
  const found = new Set();
  for (const folder of state.folders) {
    const f = folder.replace(/\\/g, "/");
    let at = f.indexOf(want);
    while (at >= 0) {
      const end = at + want.length;
      if (end === f.length || f[end] === "/") found.add(folder.slice(0, end));
      at = f.indexOf(want, at + 1);
    }
  }
  return found.size === 1 ? [...found][0] : typed;
}

export function filterParams() {
  const p = new URLSearchParams();
  const folder = resolveFolder(el.folder.value);
  if (folder) p.set("folder", folder);
  const [lo, hi] = (el.duration.value || "-").split("-");
  if (lo) p.set("min_duration", lo);
  if (hi) p.set("max_duration", hi);
  if (el.format.value) p.set("format", el.format.value);
  for (const tag of state.tags) p.append("tag", tag);
  return p;
}

/**
 * The sample-rate and channel filters as the search box's own syntax (`sr:48000 ch:2`), which
 * the server reads in a text query, and beside an example (`q` of /api/similar and
 * /api/search/like) where it takes one; where it does not, these two menus are off for
 * searches by example (`enableFieldFilters`).
 */
export function fieldTokens() {
  if (!state.offers.syntax) return [];
  const out = [];
  if (el.rate.value) out.push(`sr:${el.rate.value}`);
  if (el.channels.value) out.push(`ch:${el.channels.value}`);
  return out;
}

/** The page's own address parameters for those two (sr=48000&ch=2). */
export function fieldParams(p) {
  if (!state.offers.syntax) return;
  if (el.rate.value) p.set("sr", el.rate.value);
  if (el.channels.value) p.set("ch", el.channels.value);
}

/** `on`: whether the search shown reads the sample-rate and channel menus. */
export function enableFieldFilters(on) {
  for (const select of [el.rate, el.channels]) {
    select.disabled = !on;
    select.title = on ? "" : "Applies to searches by description";
  }
}

/** The filters as saved in history entries, and back. */
export function saveFilters() {
  return {
    folder: el.folder.value,
    duration: el.duration.value,
    format: el.format.value,
    rate: el.rate.value,
    channels: el.channels.value,
    tags: [...state.tags],
  };
}

export function restoreFilters(saved) {
  el.folder.value = saved.folder || "";
  el.duration.value = saved.duration || "";
  pick(el.format, saved.format || "");
  pick(el.rate, saved.rate || "");
  pick(el.channels, saved.channels || "");
  setTags(saved.tags || []);
}

/** The filters named in an address (?folder=…&min_duration=…&format=…&tag=…). */
export function filtersFromUrl(p) {
  el.folder.value = p.get("folder") || "";
  setTags(p.getAll("tag"));
  const lo = p.get("min_duration") || "";
  const hi = p.get("max_duration") || "";
  if (lo || hi) pick(el.duration, `${lo}-${hi}`);
  if (p.get("format")) pick(el.format, p.get("format"), true);
  if (state.offers.syntax && p.get("sr")) pick(el.rate, p.get("sr"), true);
  if (state.offers.syntax && p.get("ch")) pick(el.channels, p.get("ch"), true);
}

function pick(select, value, add = false) {
  if (![...select.options].some((o) => o.value === value)) {
    if (!add || !value) return;
    select.append(make("option", { value, text: value }));
  }
  select.value = value;
}

// --- the tag filter --------------------------------------------------------------------------

export function setTags(tags) {
  state.tags = [];
  for (const tag of tags) {
    const t = String(tag).trim();
    if (t && !state.tags.some((x) => x.toLowerCase() === t.toLowerCase())) state.tags.push(t);
  }
  el.tagChosen.replaceChildren(
    ...state.tags.map((tag) =>
      make(
        "button",
        {
          type: "button",
          class: "tag-chip is-chosen",
          dataset: { tag },
          title: `Remove the tag filter “${tag}”`,
          "aria-label": `Remove tag filter ${tag}`,
        },
        tag,
        make("span", { class: "tag-x", "aria-hidden": "true", text: "×" }),
      ),
    ),
  );
  el.tagChosen.hidden = state.tags.length === 0;
  if (state.tags.length) el.tagFilter.hidden = false;
}

export function addTag(name) {
  const tag = String(name || "").trim();
  el.tag.value = "";
  if (!tag || state.tags.some((t) => t.toLowerCase() === tag.toLowerCase())) return;
  setTags([...state.tags, tag]);
  changed();
}

export function removeTag(tag) {
  setTags(state.tags.filter((t) => t !== tag));
  changed();
}

// --- menus -------------------------------------------------------------------------------------

const option = (value, label) => make("option", { value, label });

export async function loadMenus() {
  try {
    const { folders } = await api("/api/folders");
    state.folders = folders.map((f) => f.folder);
    el.folderList.replaceChildren(...folders.map((f) => option(f.folder, plural(f.files, "file"))));
  } catch (_) {
    // The folder menu is a convenience; typing a folder still works.
  }
  try {
    const { vocabulary, tags } = await api("/api/tags");
    if (vocabulary > 0) el.tagFilter.hidden = false; // the model tags sounds
    el.tagList.replaceChildren(...tags.map((t) => option(t.name, plural(t.files, "file"))));
  } catch (_) {
    // Without the menu the tag filter still takes typed names.
  }
  try {
    const facets = await api("/api/facets");
    fill(el.format, el.formatFilter, facets.formats, (f) => f.toUpperCase());
    if (state.offers.syntax) {
      fill(el.rate, el.rateFilter, facets.sample_rates, rate);
      fill(el.channels, el.channelsFilter, facets.channels, channelsText);
    }
  } catch (_) {
    // An older server: no format menus.
  }
}

function fill(select, box, values, label) {
  if (!values || values.length < 2) return; // one format: nothing to choose
  const keep = select.value;
  select.replaceChildren(
    select.options[0],
    ...values.map((v) =>
      make("option", { value: String(v.value), text: `${label(v.value)} (${v.files})` }),
    ),
  );
  select.value = keep;
  box.hidden = false;
}
