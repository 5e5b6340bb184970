// earshot's web page: search as you type, listen from the matching second, find more like it.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    form: $("search-form"),
    q: $("q"),
    pick: $("pick"),
    file: $("file"),
    folder: $("folder"),
    folderList: $("folder-list"),
    duration: $("duration"),
    tagFilter: $("tag-filter"),
    tag: $("tag"),
    tagList: $("tag-list"),
    tagChosen: $("tag-chosen"),
    summary: $("catalogue-summary"),
    banner: $("banner"),
    status: $("status"),
    back: $("back"),
    results: $("results"),
    welcome: $("welcome"),
    playerBar: $("player-bar"),
    player: $("player"),
    nowName: $("now-name"),
    drop: $("drop-overlay"),
  };

  const K = 20;
  const PEAKS_N = 240;
  const DEBOUNCE_MS = 220;
  const HIT_TAGS = 5; // chips under a hit

  const state = {
    hits: [], // the hits on screen, in order
    items: [], // their <li> elements
    current: null, // {hit, li} being played
    controller: null, // AbortController of the request in flight
    seq: 0,
    limits: { max_upload_mb: 20, max_upload_s: 60 },
    lastUpload: null, // the File of the last search by example (filters re-run it)
    mode: "none", // "text" | "similar" | "upload" | "none"
    similar: null, // {file_id, segment_id, name}
    untrained: false,
    tags: [], // sound tags every result must have (the tag filter)
  };
  const peaks = new Map(); // file_id -> Promise<{peaks, duration}>

  // --- talking to the server --------------------------------------------------------------

  async function api(url, options = {}) {
    const res = await fetch(url, { credentials: "same-origin", ...options });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const message = body && body.error ? body.error : `${res.status} ${res.statusText}`;
      throw Object.assign(new Error(message), { status: res.status });
    }
    return body;
  }

  function filterParams() {
    const p = new URLSearchParams();
    const folder = el.folder.value.trim();
    if (folder) p.set("folder", folder);
    const [lo, hi] = (el.duration.value || "-").split("-");
    if (lo) p.set("min_duration", lo);
    if (hi) p.set("max_duration", hi);
    for (const tag of state.tags) p.append("tag", tag);
    return p;
  }

  function begin() {
    if (state.controller) state.controller.abort();
    state.controller = new AbortController();
    state.seq += 1;
    return { signal: state.controller.signal, seq: state.seq };
  }

  function isCurrent(seq) {
    return seq === state.seq;
  }

  // --- the three kinds of search ------------------------------------------------------------

  async function searchText(history = "replace") {
    const text = el.q.value.trim();
    if (!text && !state.tags.length) {
      clearResults();
      writeUrl({ kind: "none" }, history);
      return;
    }
    const params = filterParams(); // no text, only tags: the recordings that have them
    if (text) params.set("q", text);
    params.set("k", K);
    const { signal, seq } = begin();
    setBusy(true);
    try {
      const data = await api(`/api/search?${params}`, { signal });
      if (!isCurrent(seq)) return;
      state.mode = "text";
      render(data, { kind: "text", text });
      writeUrl({ kind: "text", q: text, data }, history);
    } catch (err) {
      if (err.name !== "AbortError" && isCurrent(seq)) showError(err.message);
    } finally {
      if (isCurrent(seq)) setBusy(false);
    }
  }

  async function searchSimilar(hit, history = "push") {
    const params = filterParams();
    if (hit.segment_id) params.set("segment", hit.segment_id);
    params.set("k", K);
    const { signal, seq } = begin();
    setBusy(true);
    try {
      const data = await api(`/api/similar/${encodeURIComponent(hit.file_id)}?${params}`, {
        signal,
      });
      if (!isCurrent(seq)) return;
      state.mode = "similar";
      state.similar = { file_id: hit.file_id, segment_id: hit.segment_id, name: data.query.name };
      render(data, { kind: "similar" });
      writeUrl({ kind: "similar", file: hit.file_id, segment: hit.segment_id, data }, history);
      focusFirstHit();
    } catch (err) {
      if (err.name !== "AbortError" && isCurrent(seq)) showError(err.message);
    } finally {
      if (isCurrent(seq)) setBusy(false);
    }
  }

  async function searchUpload(file, history = "push") {
    const limitMb = state.limits.max_upload_mb;
    if (file.size > limitMb * 1048576) {
      showError(`“${file.name}” is ${(file.size / 1048576).toFixed(1)} MB; examples are limited to ${limitMb} MB.`);
      return;
    }
    state.lastUpload = file;
    const form = new FormData();
    form.append("file", file, file.name);
    const params = filterParams();
    params.set("k", K);
    const { signal, seq } = begin();
    setBusy(true, `Listening to “${file.name}”…`);
    try {
      const data = await api(`/api/search/like?${params}`, { method: "POST", body: form, signal });
      if (!isCurrent(seq)) return;
      state.mode = "upload";
      render(data, { kind: "upload" });
      writeUrl({ kind: "upload", name: file.name, data }, history);
      focusFirstHit();
    } catch (err) {
      if (err.name !== "AbortError" && isCurrent(seq)) showError(err.message);
    } finally {
      if (isCurrent(seq)) setBusy(false);
    }
  }

  function rerun() {
    if (state.mode === "similar" && state.similar) searchSimilar(state.similar, "replace");
    else if (state.mode === "upload" && state.lastUpload) searchUpload(state.lastUpload, "replace");
    else searchText("replace");
  }

  // --- the address bar: shareable searches, Back and Forward ------------------------------

  function writeUrl(entry, history) {
    const p = new URLSearchParams();
    if (entry.kind === "text") p.set("q", entry.q);
    if (entry.kind === "similar") {
      p.set("like", entry.file);
      if (entry.segment) p.set("segment", entry.segment);
    }
    if (entry.kind === "upload") p.set("example", entry.name);
    for (const [key, value] of filterParams()) p.append(key, value);
    const url = p.toString() ? `/?${p}` : "/";
    const saved = {
      ...entry,
      folder: el.folder.value,
      duration: el.duration.value,
      query: el.q.value,
      tags: [...state.tags],
    };
    if (history === "push") window.history.pushState(saved, "", url);
    else window.history.replaceState(saved, "", url);
  }

  window.addEventListener("popstate", (event) => {
    const saved = event.state;
    if (!saved) return;
    el.folder.value = saved.folder || "";
    el.duration.value = saved.duration || "";
    el.q.value = saved.query || "";
    setTags(saved.tags || []);
    if (saved.kind === "none" || !saved.data) {
      state.mode = "none";
      clearResults();
      return;
    }
    state.mode = saved.kind;
    if (saved.kind === "similar") {
      state.similar = { file_id: saved.file, segment_id: saved.segment, name: saved.data.query.name };
    }
    render(saved.data, { kind: saved.kind, text: saved.q });
  });

  function startFromUrl() {
    const p = new URLSearchParams(window.location.search);
    el.folder.value = p.get("folder") || "";
    setTags(p.getAll("tag"));
    const lo = p.get("min_duration") || "";
    const hi = p.get("max_duration") || "";
    if (lo || hi) {
      const wanted = `${lo}-${hi}`;
      if ([...el.duration.options].some((o) => o.value === wanted)) el.duration.value = wanted;
    }
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

  // --- showing results -----------------------------------------------------------------------

  function render(data, what) {
    hideBanner();
    el.welcome.hidden = true;
    const hits = data.hits || [];
    state.hits = hits;
    el.results.replaceChildren();
    state.items = hits.map((hit, i) => {
      const li = hitElement(hit, i);
      el.results.append(li);
      return li;
    });
    const took = data.took_ms != null ? ` · ${Math.round(data.took_ms)} ms` : "";
    const n = hits.length;
    const count = n === 0 ? "No matches" : `${n} ${n === 1 ? "recording" : "recordings"}`;
    let about = "";
    const text = what.kind === "text" ? what.text || data.query.text : "";
    if (text) about = ` for “${text}”`;
    else if (what.kind === "text") about = ` tagged ${state.tags.map((t) => `“${t}”`).join(" + ")}`;
    if (what.kind === "similar") {
      const q = data.query;
      const span = q.start != null ? ` ${clock(q.start)}–${clock(q.end)}` : "";
      about = ` that sound like “${q.name}”${span}`;
    }
    if (what.kind === "upload") about = ` that sound like “${data.query.upload}”`;
    const filtered = Object.keys(data.filters || {}).length ? " (filtered)" : "";
    el.status.textContent = `${count}${about}${filtered}${took}`;
    el.back.hidden = !(what.kind === "similar" || what.kind === "upload") || window.history.length < 2;
    if (n === 0) {
      const hint = filtered ? "Try removing a filter." : "Try describing it differently.";
      el.status.textContent += `. ${hint}`;
    }
    // Keep the playing hit lit if it is still on screen.
    if (state.current) {
      const i = hits.findIndex((h) => h.file_id === state.current.hit.file_id);
      state.current = i >= 0 ? { hit: state.current.hit, li: state.items[i] } : { hit: state.current.hit, li: null };
      updatePlayButtons();
    }
  }

  function clearResults() {
    state.hits = [];
    state.items = [];
    el.results.replaceChildren();
    el.status.textContent = "";
    el.back.hidden = true;
    el.welcome.hidden = false;
  }

  function hitElement(hit, i) {
    const li = document.createElement("li");
    li.className = "hit";
    li.tabIndex = i === 0 ? 0 : -1;
    li.dataset.index = i;
    li.dataset.fileId = hit.file_id;
    li.setAttribute(
      "aria-label",
      `${hit.name}, ${clock(hit.duration)} long, best match ${clock(hit.start)} to ${clock(hit.end)}, score ${hit.score.toFixed(2)}`,
    );

    const play = document.createElement("button");
    play.type = "button";
    play.className = "play";
    play.tabIndex = -1;
    play.setAttribute("aria-label", `Play ${hit.name} from ${clock(hit.start)}`);
    play.innerHTML = ICON_PLAY;
    play.addEventListener("click", (e) => {
      e.stopPropagation();
      toggle(i);
    });

    const body = document.createElement("div");
    body.className = "hit-body";

    const head = document.createElement("div");
    head.className = "hit-head";
    const name = document.createElement("span");
    name.className = "hit-name";
    name.textContent = hit.name;
    name.title = hit.path;
    const score = document.createElement("span");
    score.className = "hit-score";
    score.textContent = hit.score.toFixed(2);
    score.title = "Score: how closely the best-matching part fits (cosine similarity, up to 1)";
    head.append(name, score);

    const meta = document.createElement("div");
    meta.className = "hit-meta";
    const folder = document.createElement("span");
    folder.className = "hit-folder";
    folder.textContent = shortFolder(hit.folder);
    folder.title = hit.folder;
    const length = document.createElement("span");
    length.textContent = clock(hit.duration);
    length.title = "Length of the recording";
    const span = document.createElement("span");
    span.className = "hit-span";
    span.textContent = `match ${clock(hit.start)}–${clock(hit.end)}`;
    span.title = "The part that matches best; playback starts here";
    meta.append(folder, length, span);

    const wave = document.createElement("canvas");
    wave.className = "wave";
    wave.setAttribute("aria-hidden", "true");
    wave.title = "Click to play from that point";
    wave.addEventListener("click", (e) => {
      e.stopPropagation();
      const rect = wave.getBoundingClientRect();
      const at = ((e.clientX - rect.left) / rect.width) * hit.duration;
      playHit(i, Math.max(0, Math.min(hit.duration, at)));
    });

    body.append(head, meta);
    if (hit.tags && hit.tags.length) body.append(hitTags(hit));
    body.append(wave);

    const more = document.createElement("button");
    more.type = "button";
    more.className = "button secondary small more";
    more.innerHTML = '<span class="more-icon" aria-hidden="true">≈</span><span class="more-label">More like this</span>';
    more.title = "Find recordings that sound like this match";
    more.setAttribute("aria-label", `More like ${hit.name} ${clock(hit.start)}–${clock(hit.end)}`);
    more.addEventListener("click", (e) => {
      e.stopPropagation();
      searchSimilar(hit);
    });

    li.append(play, body, more);
    li.addEventListener("click", () => li.focus());
    li.addEventListener("focus", () => {
      for (const other of state.items) other.tabIndex = other === li ? 0 : -1;
    });
    loadPeaks(hit).then(() => drawWave(i));
    return li;
  }

  function hitTags(hit) {
    const row = document.createElement("div");
    row.className = "hit-tags";
    for (const tag of hit.tags.slice(0, HIT_TAGS)) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "tag-chip";
      chip.tabIndex = -1;
      chip.dataset.tag = tag.name;
      const name = document.createElement("span");
      name.textContent = tag.name;
      const p = document.createElement("span");
      p.className = "tag-p";
      p.textContent = tag.p.toFixed(2);
      chip.append(name, p);
      chip.title = `Only recordings tagged “${tag.name}” (${tag.p.toFixed(2)} in this match)`;
      chip.setAttribute("aria-label", `Filter by tag ${tag.name}`);
      chip.addEventListener("click", (e) => {
        e.stopPropagation();
        addTag(tag.name);
      });
      row.append(chip);
    }
    return row;
  }

  // --- the tag filter ----------------------------------------------------------------------

  function setTags(tags) {
    state.tags = [];
    for (const tag of tags) {
      const t = String(tag).trim();
      if (t && !state.tags.some((x) => x.toLowerCase() === t.toLowerCase())) state.tags.push(t);
    }
    el.tagChosen.replaceChildren(
      ...state.tags.map((tag) => {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "tag-chip is-chosen";
        chip.dataset.tag = tag;
        chip.textContent = tag;
        const x = document.createElement("span");
        x.className = "tag-x";
        x.setAttribute("aria-hidden", "true");
        x.textContent = "×";
        chip.append(x);
        chip.title = `Remove the tag filter “${tag}”`;
        chip.setAttribute("aria-label", `Remove tag filter ${tag}`);
        chip.addEventListener("click", () => {
          setTags(state.tags.filter((t) => t !== tag));
          rerun();
        });
        return chip;
      }),
    );
    el.tagChosen.hidden = state.tags.length === 0;
    if (state.tags.length) el.tagFilter.hidden = false;
  }

  function addTag(name) {
    const tag = String(name || "").trim();
    el.tag.value = "";
    if (!tag || state.tags.some((t) => t.toLowerCase() === tag.toLowerCase())) return;
    setTags([...state.tags, tag]);
    rerun();
  }

  // --- waveforms -------------------------------------------------------------------------------

  function loadPeaks(hit) {
    if (!peaks.has(hit.file_id)) {
      const p = api(`/api/peaks/${hit.file_id}?n=${PEAKS_N}`).catch(() => null);
      peaks.set(hit.file_id, p);
    }
    return peaks.get(hit.file_id);
  }

  async function drawWave(i) {
    const hit = state.hits[i];
    const li = state.items[i];
    if (!hit || !li || !li.isConnected) return;
    const data = await peaks.get(hit.file_id);
    const canvas = li.querySelector("canvas");
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const duration = (data && data.duration) || hit.duration || 1;
    const x0 = (hit.start / duration) * width;
    const x1 = Math.max(x0 + 2 * dpr, (Math.min(hit.end, duration) / duration) * width);

    ctx.fillStyle = colour("--span-bg");
    ctx.fillRect(x0, 0, x1 - x0, height);

    const playing = state.current && state.current.li === li;
    const played = playing ? (el.player.currentTime / duration) * width : -1;
    const values = data && data.peaks && data.peaks.length ? data.peaks : null;
    // Scaled to the file's own loudest peak, so a quiet recording still shows its shape.
    const loudest = values ? Math.max(0.02, ...values) : 1;
    const bar = 2 * dpr;
    const gap = 1 * dpr;
    const mid = height / 2;
    for (let x = 0; x < width; x += bar + gap) {
      let v = 0.04 * loudest;
      if (values) {
        const a = Math.floor((x / width) * values.length);
        const b = Math.max(a + 1, Math.floor(((x + bar + gap) / width) * values.length));
        for (let j = a; j < b && j < values.length; j++) v = Math.max(v, values[j]);
      }
      const h = Math.max(1 * dpr, Math.min(1, Math.pow(v / loudest, 0.8)) * (height - 2 * dpr));
      const inSpan = x + bar >= x0 && x <= x1;
      if (x < played) ctx.fillStyle = colour(inSpan ? "--wave-span-played" : "--wave-played");
      else ctx.fillStyle = colour(inSpan ? "--wave-span" : "--wave");
      ctx.fillRect(x, mid - h / 2, bar, h);
    }
    if (playing) {
      ctx.fillStyle = colour("--playhead");
      ctx.fillRect(Math.max(0, played - dpr), 0, 2 * dpr, height);
    }
  }

  function redrawAll() {
    state.hits.forEach((_, i) => drawWave(i));
  }

  // --- playback ----------------------------------------------------------------------------------

  function playHit(i, at) {
    const hit = state.hits[i];
    const li = state.items[i];
    const player = el.player;
    const src = `/api/audio/${hit.file_id}`;
    const same = state.current && state.current.hit.file_id === hit.file_id && player.getAttribute("src")?.startsWith(src);
    state.current = { hit, li };
    el.playerBar.hidden = false;
    el.nowName.textContent = `${hit.name} · from ${clock(at)}`;
    el.nowName.title = hit.path;
    if (same) {
      player.currentTime = at;
    } else {
      player.src = `${src}#t=${at.toFixed(2)}`;
      player.addEventListener(
        "loadedmetadata",
        () => {
          if (Math.abs(player.currentTime - at) > 0.25) player.currentTime = at;
        },
        { once: true },
      );
    }
    player.play().catch((err) => {
      if (err.name !== "AbortError") showError(`Cannot play “${hit.name}”: ${err.message}`);
    });
    updatePlayButtons();
    redrawAll();
  }

  function toggle(i) {
    const li = state.items[i];
    if (state.current && state.current.li === li) {
      if (el.player.paused) el.player.play();
      else el.player.pause();
    } else {
      playHit(i, state.hits[i].start);
    }
  }

  function updatePlayButtons() {
    state.items.forEach((li) => {
      const active = state.current && state.current.li === li;
      const playing = active && !el.player.paused;
      li.classList.toggle("is-active", !!active);
      const button = li.querySelector(".play");
      button.innerHTML = playing ? ICON_PAUSE : ICON_PLAY;
      const hit = state.hits[Number(li.dataset.index)];
      button.setAttribute("aria-label", `${playing ? "Pause" : "Play"} ${hit.name}`);
      button.setAttribute("aria-pressed", playing ? "true" : "false");
    });
  }

  let frame = 0;
  el.player.addEventListener("timeupdate", () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (state.current && state.current.li) drawWave(Number(state.current.li.dataset.index));
    });
  });
  for (const type of ["play", "pause", "ended"]) el.player.addEventListener(type, updatePlayButtons);
  el.player.addEventListener("error", () => {
    if (el.player.getAttribute("src")) showError("This recording could not be played (its file may have moved).");
  });

  // --- keyboard ---------------------------------------------------------------------------------

  function focusHit(i) {
    const li = state.items[Math.max(0, Math.min(state.items.length - 1, i))];
    if (li) {
      li.focus();
      li.scrollIntoView({ block: "nearest" });
    }
  }

  function focusFirstHit() {
    if (state.items.length) focusHit(0);
  }

  document.addEventListener("keydown", (e) => {
    const target = e.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
    if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      el.q.focus();
      el.q.select();
      return;
    }
    if (e.key === "Escape" && !el.player.paused) {
      el.player.pause();
      return;
    }
    const li = target.closest && target.closest(".hit");
    if (target === el.q && e.key === "ArrowDown" && state.items.length) {
      e.preventDefault();
      focusHit(0);
      return;
    }
    if (!li || target.tagName === "BUTTON") return;
    const i = Number(li.dataset.index);
    if (e.key === "ArrowDown" || e.key === "j") {
      e.preventDefault();
      focusHit(i + 1);
    } else if (e.key === "ArrowUp" || e.key === "k") {
      e.preventDefault();
      if (i === 0) el.q.focus();
      else focusHit(i - 1);
    } else if (e.key === "Home") {
      e.preventDefault();
      focusHit(0);
    } else if (e.key === "End") {
      e.preventDefault();
      focusHit(state.items.length - 1);
    } else if (e.key === " " || e.key === "Enter") {
      e.preventDefault();
      toggle(i);
    } else if (e.key === "m" || e.key === "M") {
      e.preventDefault();
      searchSimilar(state.hits[i]);
    }
  });

  // --- search box, filters, example files --------------------------------------------------------

  let timer = 0;
  el.q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => searchText("replace"), DEBOUNCE_MS);
  });
  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(timer);
    searchText("push");
  });
  el.q.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && el.q.value) {
      el.q.value = "";
      clearResults();
    }
  });
  el.folder.addEventListener("change", rerun);
  el.tag.addEventListener("change", () => addTag(el.tag.value));
  el.tag.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addTag(el.tag.value);
    }
  });
  el.duration.addEventListener("change", rerun);
  el.back.addEventListener("click", () => window.history.back());

  for (const chip of document.querySelectorAll(".chip")) {
    chip.addEventListener("click", () => {
      el.q.value = chip.textContent;
      searchText("push");
    });
  }

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

  // --- messages -----------------------------------------------------------------------------------

  function setBusy(busy, text) {
    document.body.classList.toggle("is-busy", busy);
    el.results.setAttribute("aria-busy", busy ? "true" : "false");
    if (busy && text) el.status.textContent = text;
  }

  function showError(message) {
    el.banner.className = "banner error";
    el.banner.textContent = message;
    el.banner.hidden = false;
  }

  function showNote(message) {
    el.banner.className = "banner note";
    el.banner.textContent = message;
    el.banner.hidden = false;
  }

  function hideBanner() {
    if (state.untrained) showUntrained();
    else el.banner.hidden = true;
  }

  function showUntrained() {
    el.banner.className = "banner warning";
    el.banner.textContent =
      "This server runs an untrained model (--random-init): the ranking is random. Start it with a trained model to search for real.";
    el.banner.hidden = false;
  }

  // --- formatting ---------------------------------------------------------------------------------

  function clock(seconds) {
    const s = Math.max(0, Number(seconds) || 0);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = Math.floor(s % 60);
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }

  function shortFolder(folder) {
    const parts = String(folder).split(/[\\/]/).filter(Boolean);
    if (parts.length <= 2) return folder;
    return `…/${parts.slice(-2).join("/")}`;
  }

  function hours(h) {
    if (h >= 1) return `${h.toFixed(1)} h`;
    const minutes = h * 60;
    return minutes >= 1 ? `${Math.round(minutes)} min` : `${Math.round(minutes * 60)} s`;
  }

  const ICON_PLAY = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5.5v13a1 1 0 0 0 1.5.86l10.4-6.5a1 1 0 0 0 0-1.72L9.5 4.64A1 1 0 0 0 8 5.5Z"/></svg>';
  const ICON_PAUSE = '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="6.5" y="5" width="4" height="14" rx="1"/><rect x="13.5" y="5" width="4" height="14" rx="1"/></svg>';

  // --- start ------------------------------------------------------------------------------------

  async function start() {
    if (window.matchMedia("(max-width: 640px)").matches) el.q.placeholder = "Describe a sound";
    startFromUrl();
    try {
      const stats = await api("/api/stats");
      const c = stats.catalogue;
      state.limits = stats.server.limits;
      state.untrained = stats.model.untrained;
      const model = stats.model.name ? ` · model ${stats.model.name}` : "";
      const files = `${c.files_ok.toLocaleString()} ${c.files_ok === 1 ? "recording" : "recordings"}`;
      el.summary.textContent = `Searching ${files} (${hours(c.hours)})${model}.`;
      if (c.files_ok === 0) el.summary.textContent = "The catalogue is empty: run `earshot index FOLDER` first.";
      if (c.files_skipped > 0) {
        // The files indexing skipped, and why: `earshot skipped` lists the same.
        const skipped = document.createElement("a");
        skipped.href = "/api/skipped";
        skipped.id = "skipped-count";
        const n = c.files_skipped.toLocaleString();
        skipped.textContent = `${n} ${c.files_skipped === 1 ? "file" : "files"} could not be indexed`;
        el.summary.append(" ", skipped, ".");
      }
      if (state.untrained) showUntrained();
    } catch (err) {
      showError(`The server did not answer: ${err.message}`);
    }
    try {
      const { folders } = await api("/api/folders");
      el.folderList.replaceChildren(
        ...folders.map((f) => {
          const option = document.createElement("option");
          option.value = f.folder;
          option.label = `${f.files} ${f.files === 1 ? "file" : "files"}`;
          return option;
        }),
      );
    } catch (_) {
      // The folder menu is a convenience; typing a folder still works.
    }
    try {
      const { vocabulary, tags } = await api("/api/tags");
      if (vocabulary > 0) el.tagFilter.hidden = false; // the model tags sounds
      el.tagList.replaceChildren(
        ...tags.map((t) => {
          const option = document.createElement("option");
          option.value = t.name;
          option.label = `${t.files} ${t.files === 1 ? "file" : "files"}`;
          return option;
        }),
      );
    } catch (_) {
      // Without the menu the tag filter still takes typed names.
    }
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(redrawAll, 100);
  });

  // Exposed for tests and the curious: what is on screen.
  window.earshot = { state };
  start();
})();
