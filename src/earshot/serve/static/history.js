// The address bar: every search is a shareable address, and Back and Forward redraw earlier ones
// from what history saved (without asking the server again).
import { el, state } from "./state.js";
import { fieldParams, filterParams, saveFilters } from "./filters.js";

export function writeUrl(entry, history) {
  const p = new URLSearchParams();
  if (entry.kind === "text" && entry.q) p.set("q", entry.q);
  if (entry.kind === "similar") {
    p.set("like", entry.file);
    if (entry.segment) p.set("segment", entry.segment);
  }
  if (entry.kind === "upload") p.set("example", entry.name);
  for (const [key, value] of filterParams()) p.append(key, value);
  fieldParams(p);
  if (state.offers.sort && el.sort.value && el.sort.value !== "score") p.set("sort", el.sort.value);
  const url = p.toString() ? `/?${p}` : "/";
  const data = entry.data ? { ...entry.data, hits: entry.hits || entry.data.hits } : null;
  const saved = { ...entry, data, hits: undefined, query: el.q.value, sort: el.sort.value };
  Object.assign(saved, saveFilters());
  if (history === "push") window.history.pushState(saved, "", url);
  else window.history.replaceState(saved, "", url);
}
