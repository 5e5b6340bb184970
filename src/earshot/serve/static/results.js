// The list of hits. Each hit is drawn from its JSON (Hit.as_dict); fields a server does not send
// (band, spans, meta, sample rate…) are simply not shown. Buttons carry data-action and app.js
// answers them with one listener on the list.
import { el, state } from "./state.js";
import { hideBanner } from "./messages.js";
import { loadPeaks, drawWave } from "./wave.js";
import { relink } from "./player.js";
import {
  ICON_PLAY,
  channelsText,
  clock,
  length,
  make,
  plural,
  rate,
  shortFolder,
  spanText,
} from "./util.js";

const HIT_TAGS = 5; // chips under a hit
const BAND_TEXT = { good: "good match", weak: "weak match", none: "no match" };

/** The hits are on screen in `data`'s order; `append` keeps those already there (paging). */
export function render(data, request, append = false) {
  hideBanner();
  el.welcome.hidden = true;
  const hits = data.hits || [];
  const start = append ? state.hits.length : 0;
  if (!append) {
    state.hits = [];
    state.items = [];
    el.results.replaceChildren();
    state.showWeak = false;
  }
  hits.forEach((hit, j) => {
    const i = start + j;
    const li = hitElement(hit, i, Boolean(data.hybrid));
    state.hits.push(hit);
    state.items.push(li);
    el.results.append(li);
    loadPeaks(hit).then(() => drawWave(i));
  });
  state.data = data;
  if (!state.items.some((li) => li.tabIndex === 0) && state.items.length) {
    state.items[0].tabIndex = 0;
  }
  applyWeak();
  writeStatus(data, request);
  el.back.hidden =
    !(request.kind === "similar" || request.kind === "upload") || window.history.length < 2;
  el.tools.hidden = state.hits.length === 0;
  relink();
}

export function clearResults() {
  state.hits = [];
  state.items = [];
  state.data = null;
  el.results.replaceChildren();
  el.status.textContent = "";
  el.verdict.hidden = true;
  el.back.hidden = true;
  el.tools.hidden = true;
  el.weak.hidden = true;
  el.more.hidden = true;
  el.welcome.hidden = false;
}

/**
 * Hits worth hiding: the weak and no-match tail after the last good hit, so a list ranked by
 * score keeps its ranks (a weak hit ranked above a good one, as fused keyword matches can rank
 * it, stays, marked); sorted by name, duration or date, every hit that is not good.
 */
function weakTail() {
  const lastGood = state.hits.findLastIndex((h) => h.band === "good");
  if (lastGood < 0) return [];
  const byScore = !el.sort || !el.sort.value || el.sort.value === "score";
  const from = byScore ? lastGood + 1 : 0;
  return state.hits
    .map((h, i) => (i >= from && h.band && h.band !== "good" ? i : -1))
    .filter((i) => i >= 0);
}

export function applyWeak() {
  const tail = weakTail();
  const hide = new Set(state.showWeak ? [] : tail);
  state.items.forEach((li, i) => {
    li.hidden = hide.has(i);
  });
  el.weak.hidden = tail.length === 0;
  el.weak.setAttribute("aria-expanded", state.showWeak ? "true" : "false");
  el.weak.textContent = state.showWeak
    ? `Hide ${plural(tail.length, "weak match", "weak matches")}`
    : `Show ${plural(tail.length, "weak match", "weak matches")}`;
}

export function toggleWeak() {
  state.showWeak = !state.showWeak;
  applyWeak();
  state.hits.forEach((_, i) => drawWave(i));
}

/** The hits a keyboard moves through: those shown. */
export function shownItems() {
  return state.items.filter((li) => !li.hidden);
}

function writeStatus(data, request) {
  const n = state.hits.length;
  const count = n === 0 ? "No matches" : plural(n, "recording");
  let about = "";
  const text = request.kind === "text" ? request.text || data.query.text : "";
  if (text) about = ` for “${text}”`;
  else if (request.kind === "text") {
    about = ` tagged ${state.tags.map((t) => `“${t}”`).join(" + ")}`;
  }
  if (request.kind === "similar") {
    const q = data.query;
    const span = q.start != null ? ` ${spanText(q.start, q.end, q.end)}` : "";
    about = ` that sound like “${q.name}”${span}`;
  }
  if (request.kind === "upload") about = ` that sound like “${data.query.upload}”`;
  const filtered = Object.keys(data.filters || {}).length ? " (filtered)" : "";
  const took = data.took_ms != null ? ` · ${Math.round(data.took_ms)} ms` : "";
  let line = `${count}${about}${filtered}${took}`;
  if (n === 0 && data.empty_reason) line += `. ${sentence(data.empty_reason)}`;
  else if (n === 0) {
    line += `. ${filtered ? "Try removing a filter." : "Try describing it differently."}`;
  }
  el.status.textContent = line;
  // Said plainly when nothing matches well: the server's sentence, or the page's own.
  let verdict = "";
  if (n > 0 && data.message) verdict = sentence(data.message);
  else if (n > 0 && state.hits.every((h) => h.band && h.band !== "good")) {
    verdict = "Nothing matches well: these are the closest.";
  }
  el.verdict.textContent = verdict;
  el.verdict.hidden = !verdict;
}

const sentence = (text) => {
  const s = String(text).trim();
  return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
};

/** The badge's words: its band, and where it is good only by its name, that. */
function bandText(hit) {
  const text = BAND_TEXT[hit.band] || hit.band;
  return hit.by_name ? `${text} · by name` : text;
}

function bandOf(hit) {
  if (!hit.band) return null;
  const conf = hit.confidence != null ? ` (confidence ${hit.confidence.toFixed(2)})` : "";
  const title = hit.by_name
    ? "Its name or description holds every word you asked for, so it counts as a good " +
      `match; by its sound alone it scores ${shownScore(hit).toFixed(2)}`
    : `How well this matches${conf}`;
  return make("span", {
    class: `band band-${hit.band}`,
    text: bandText(hit),
    title,
  });
}

const SCORE_TITLE = {
  false: "Score: how closely the best-matching part fits (cosine similarity, up to 1)",
  true:
    "Score: how closely the best-matching part fits (cosine similarity, up to 1). The list is " +
    "ranked by sound and by the query's words in names, tags and descriptions together, so a " +
    "file named for what you asked can rank above a closer sound; the badge says how good a match it is",
};

/** The number shown beside a hit: its cosine similarity; a tag search's, the probability. */
function shownScore(hit) {
  return hit.similarity ?? hit.score;
}

function hitElement(hit, i, hybrid = false) {
  const span = spanText(hit.start, hit.end, hit.duration);
  const li = make("li", {
    class: `hit${hit.band ? ` is-${hit.band}` : ""}`,
    tabindex: -1,
    draggable: "true",
    dataset: { index: i, fileId: hit.file_id },
    "aria-label":
      `${hit.name}, ${length(hit.duration)} long, best match ${span}, score ${shownScore(hit).toFixed(2)}` +
      (hit.band ? `, ${bandText(hit)}` : ""),
  });
  li.tabIndex = -1;

  const play = make("button", {
    type: "button",
    class: "play",
    tabindex: -1,
    dataset: { action: "play" },
    "aria-label": `Play ${hit.name} from ${clock(hit.start)}`,
    html: ICON_PLAY,
  });

  const score = make("span", {
    class: "hit-score",
    text: shownScore(hit).toFixed(2),
    title: SCORE_TITLE[hybrid],
  });
  const head = make(
    "div",
    { class: "hit-head" },
    make("span", { class: "hit-name", text: hit.name, title: hit.path }),
    bandOf(hit),
    score,
  );

  const facts = make(
    "div",
    { class: "hit-meta" },
    make("span", { class: "hit-folder", text: shortFolder(hit.folder), title: hit.folder }),
    make("span", { class: "hit-length", text: length(hit.duration), title: "Length" }),
    hit.format ? make("span", { class: "hit-format", text: hit.format.toUpperCase() }) : null,
    hit.sample_rate ? make("span", { class: "hit-rate", text: rate(hit.sample_rate) }) : null,
    hit.channels ? make("span", { class: "hit-channels", text: channelsText(hit.channels) }) : null,
    make("span", {
      class: "hit-span",
      text: `match ${span}`,
      title: "The part that matches best; playback starts here",
    }),
  );

  const body = make("div", { class: "hit-body" }, head, facts);
  const described = metaElement(hit);
  if (described) body.append(described);
  if (hit.tags && hit.tags.length) body.append(hitTags(hit));
  body.append(
    make("canvas", {
      class: "wave",
      "aria-hidden": "true",
      title: "Click to play from that point",
      dataset: { action: "seek" },
    }),
  );
  const spans = spansElement(hit);
  if (spans) body.append(spans);
  if (hit.also_at && hit.also_at.length) {
    body.append(
      make("div", {
        class: "hit-also",
        text: `Also at ${hit.also_at.map(shortFolder).join(", ")}`,
        title: hit.also_at.join("\n"),
      }),
    );
  }

  const actions = make(
    "div",
    { class: "hit-actions" },
    make(
      "button",
      {
        type: "button",
        class: "button secondary small more",
        dataset: { action: "more" },
        title: "Find recordings that sound like this match",
        "aria-label": `More like ${hit.name} ${span}`,
      },
      make("span", { class: "more-icon", "aria-hidden": "true", text: "≈" }),
      make("span", { class: "more-label", text: "More like this" }),
    ),
    make("button", {
      type: "button",
      class: "link-button small copy",
      dataset: { action: "copy" },
      title: `Copy the path: ${hit.path}`,
      "aria-label": `Copy the path of ${hit.name}`,
      text: "Copy path",
    }),
    state.offers.clip
      ? make("a", {
          class: "link-button small download",
          href: clipUrl(hit, hit.start, hit.end),
          download: "",
          title: `Download the matching span (${span}) as a file`,
          "aria-label": `Download ${hit.name} ${span}`,
          text: "Download span",
        })
      : null,
  );

  li.append(play, body, actions);
  return li;
}

export function clipUrl(hit, start, end) {
  const p = new URLSearchParams({ start: start.toFixed(3), end: end.toFixed(3) });
  return `/api/clip/${hit.file_id}?${p}`;
}

function metaElement(hit) {
  const meta = hit.meta;
  if (!meta || typeof meta !== "object") return null;
  const box = make("div", { class: "hit-described" });
  // The category: a UCS file name's, or a library's own (iXML CATEGORY / SUBCATEGORY).
  const ucs = meta.ucs || {};
  const category = ucs.category || meta.category;
  const subcategory = ucs.subcategory || meta.subcategory;
  const catId = ucs.cat_id || meta.cat_id;
  if (category || catId) {
    const what = [category, subcategory].filter(Boolean).join(" · ") || catId;
    box.append(
      make("span", {
        class: "hit-ucs",
        text: what,
        title: catId ? `UCS category ${catId}` : "Category (from the file's metadata)",
      }),
    );
  }
  const text = meta.description || meta.title || meta.fx_name || ucs.fx_name;
  if (text) box.append(make("span", { class: "hit-description", text, title: text }));
  const words = Array.isArray(meta.keywords) ? meta.keywords : [];
  if (words.length) {
    box.append(
      make(
        "span",
        { class: "hit-keywords", title: "Keywords in the file" },
        ...words.slice(0, 8).map((w) => make("span", { class: "keyword", text: w })),
      ),
    );
  }
  return box.childNodes.length ? box : null;
}

function spansElement(hit) {
  const spans = Array.isArray(hit.spans) ? hit.spans : [];
  const others = spans.slice(1);
  const beyond = Number(hit.more_spans) || 0;
  if (!others.length && !beyond) return null;
  const box = make("div", { class: "hit-spans" });
  if (others.length) {
    const list = make("div", { class: "span-list", hidden: true, role: "group" });
    list.setAttribute("aria-label", `Other matches in ${hit.name}`);
    for (const s of others) {
      const text = spanText(s.start, s.end, hit.duration);
      list.append(
        make(
          "button",
          {
            type: "button",
            class: "span-chip",
            dataset: { action: "span", start: s.start, end: s.end },
            "aria-label": `Play ${hit.name} ${text}`,
          },
          make("span", { text }),
          s.score != null ? make("span", { class: "tag-p", text: s.score.toFixed(2) }) : null,
        ),
      );
    }
    const n = others.length + beyond;
    box.append(
      make("button", {
        type: "button",
        class: "link-button small spans-toggle",
        dataset: { action: "spans" },
        "aria-expanded": "false",
        text: `${plural(n, "more match", "more matches")} in this file`,
      }),
      list,
    );
  } else {
    box.append(
      make("span", {
        class: "spans-note",
        text: `${plural(beyond, "more match", "more matches")} in this file`,
      }),
    );
  }
  return box;
}

export function toggleSpans(li) {
  const button = li.querySelector(".spans-toggle");
  const list = li.querySelector(".span-list");
  if (!button || !list) return;
  const open = list.hidden;
  list.hidden = !open;
  button.setAttribute("aria-expanded", open ? "true" : "false");
  li.classList.toggle("spans-open", open);
}

function hitTags(hit) {
  const row = make("div", { class: "hit-tags" });
  const named = new Set(hit.matched_tags || []);
  for (const tag of hit.tags.slice(0, HIT_TAGS)) {
    const isNamed = named.has(tag.name);
    row.append(
      make(
        "button",
        {
          type: "button",
          class: isNamed ? "tag-chip is-named" : "tag-chip",
          tabindex: -1,
          dataset: { tag: tag.name, action: "tag" },
          title: `Only recordings tagged “${tag.name}” (${tag.p.toFixed(2)} in this match${isNamed ? "; your words name it" : ""})`,
          "aria-label": `Filter by tag ${tag.name}`,
        },
        make("span", { text: tag.name }),
        make("span", { class: "tag-p", text: tag.p.toFixed(2) }),
      ),
    );
  }
  return row;
}
