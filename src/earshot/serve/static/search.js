// The one search runner. Text, example-upload and similar-to searches differ only in the
// request they make; everything else (cancelling the one in flight, the busy state, the status
// line ending in a result or an error, history, paging) happens here, once.
import { api } from "./api.js";
import { el, state } from "./state.js";
import { enableFieldFilters, fieldTokens, filterParams } from "./filters.js";
import { setBusy, showError } from "./messages.js";
import { render, clearResults, shownItems } from "./results.js";
import { writeUrl } from "./history.js";

export const PAGE = 20;
const ROUTES = { text: "search", similar: "similar", upload: "like" };

/** Whether the server's route for this kind of search takes query parameter `name`. */
export function offers(kind, name) {
  const params = state.offers.params[ROUTES[kind]];
  return !!params && params.has(name);
}
const SPANS = 4; // spans per file asked for, where the server offers them

let controller = null;
let seq = 0;

/** The URL, fetch options and status text of a request for `k` hits from `offset`. */
function build(request, k, offset) {
  const params = filterParams();
  const takes = (name) => offers(request.kind, name);
  params.set("k", k);
  if (offset && takes("offset")) params.set("offset", offset);
  if (takes("sort") && el.sort.value && el.sort.value !== "score") {
    params.set("sort", el.sort.value);
  }
  if (takes("spans")) params.set("spans", SPANS);
  if (takes("show_weak")) params.set("show_weak", "true"); // the page folds the weak tail itself
  if (request.kind === "text") {
    const q = [request.text, ...fieldTokens()].filter(Boolean).join(" ");
    if (q) params.set("q", q);
    return { url: `/api/search?${params}`, init: {}, busy: null, failed: "Search failed" };
  }
  // Beside an example, the menus' fields go as `q` where the server takes it.
  const fields = fieldTokens().join(" ");
  if (fields && takes("q")) params.set("q", fields);
  if (request.kind === "similar") {
    if (request.hit.segment_id) params.set("segment", request.hit.segment_id);
    return {
      url: `/api/similar/${encodeURIComponent(request.hit.file_id)}?${params}`,
      init: {},
      busy: null,
      failed: "More like this failed",
    };
  }
  const form = new FormData();
  form.append("file", request.file, request.file.name);
  return {
    url: `/api/search/like?${params}`,
    init: { method: "POST", body: form },
    busy: `Listening to “${request.file.name}”…`,
    failed: `Could not search by “${request.file.name}”`,
  };
}

/**
 * Run `request` ({kind: "text", text} | {kind: "similar", hit} | {kind: "upload", file}).
 * history: "push" | "replace" the address bar entry; more: fetch the next page into the list.
 */
export async function runSearch(request, { history = "replace", more = false } = {}) {
  if (request.kind === "text" && !request.text && !state.tags.length) {
    abort();
    clearResults();
    writeUrl({ kind: "none" }, history);
    return;
  }
  if (request.kind === "upload") {
    const limitMb = state.limits.max_upload_mb;
    if (request.file.size > limitMb * 1048576) {
      const mb = (request.file.size / 1048576).toFixed(1);
      showError(`“${request.file.name}” is ${mb} MB; examples are limited to ${limitMb} MB.`);
      return;
    }
  }
  // Paging: the next page by offset where the server offers it, else a longer first page.
  const have = more ? state.hits.length : 0;
  const byOffset = more && offers(request.kind, "offset");
  const k = byOffset ? PAGE : Math.min(state.limits.max_k || 100, have + PAGE);
  const { url, init, busy, failed } = build(request, k, byOffset ? have : 0);
  abort();
  controller = new AbortController();
  const mine = ++seq;
  setBusy(true, busy);
  try {
    const data = await api(url, { ...init, signal: controller.signal });
    if (mine !== seq) return;
    const focused = document.activeElement && document.activeElement.closest?.(".hit");
    const at = focused ? Number(focused.dataset.index) : -1;
    state.last = request;
    render(data, request, byOffset);
    state.requested = byOffset ? have + k : k;
    el.more.hidden = !hasMore(data, request);
    el.sortLabel.hidden = !offers(request.kind, "sort");
    enableFieldFilters(request.kind === "text" || offers(request.kind, "q"));
    writeUrl({ ...entryOf(request), data: state.data, hits: state.hits }, history);
    if (more && at >= 0) focusHit(at + 1);
    else if (request.kind !== "text") focusHit(0);
  } catch (err) {
    if (err.name !== "AbortError" && mine === seq) showError(err.message, failed);
  } finally {
    if (mine === seq) setBusy(false);
  }
}

function hasMore(data, request) {
  const n = state.hits.length;
  const byOffset = offers(request.kind, "offset");
  if (byOffset && typeof data.more === "boolean") return data.more;
  if (n < state.requested) return false; // fewer than asked: that was all
  return byOffset || n < (state.limits.max_k || 100);
}

export function abort() {
  if (controller) controller.abort();
  controller = null;
  seq += 1;
}

function entryOf(request) {
  if (request.kind === "text") return { kind: "text", q: request.text };
  if (request.kind === "similar") {
    return { kind: "similar", file: request.hit.file_id, segment: request.hit.segment_id };
  }
  return { kind: "upload", name: request.file.name };
}

/** The current search again (a filter or the sort changed). */
export function rerun() {
  const last = state.last;
  if (last && last.kind !== "text") runSearch(last);
  else runSearch({ kind: "text", text: el.q.value.trim() });
}

export function moreResults() {
  if (state.last) runSearch(state.last, { more: true });
}

export function focusHit(position) {
  const items = shownItems();
  const li = items[Math.max(0, Math.min(items.length - 1, position))];
  if (li) {
    li.focus();
    li.scrollIntoView({ block: "nearest" });
  }
}
