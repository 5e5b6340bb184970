// Playback: one <audio> element for the page. A hit plays from its matching span; loop repeats
// that span; the volume is remembered.
import { el, state } from "./state.js";
import { showError } from "./messages.js";
import { drawWave, redrawAll } from "./wave.js";
import { ICON_PAUSE, ICON_PLAY, moment, store } from "./util.js";

/** Play hit `i` from `at` seconds; `span` ({start, end}) is what loop repeats (default: the
 * hit's best span). */
export function playHit(i, at, span = null) {
  const hit = state.hits[i];
  const li = state.items[i];
  const player = el.player;
  const src = `/api/audio/${hit.file_id}`;
  const same =
    state.current &&
    state.current.hit.file_id === hit.file_id &&
    player.getAttribute("src")?.startsWith(src);
  state.current = { hit, li, span: span || { start: hit.start, end: hit.end } };
  el.playerBar.hidden = false;
  el.nowName.textContent = `${hit.name} · from ${moment(at, hit.duration)}`;
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

export function toggle(i) {
  const li = state.items[i];
  if (state.current && state.current.li === li) {
    if (el.player.paused) el.player.play();
    else el.player.pause();
  } else {
    playHit(i, state.hits[i].start);
  }
}

export function stop() {
  if (!el.player.paused) el.player.pause();
}

export function updatePlayButtons() {
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

/** After a new list: keep the playing hit lit if it is still on screen. */
export function relink() {
  if (!state.current) return;
  const i = state.hits.findIndex((h) => h.file_id === state.current.hit.file_id);
  state.current = { ...state.current, li: i >= 0 ? state.items[i] : null };
  updatePlayButtons();
}

export function setLoop(on) {
  state.loop = !!on;
  store.set("loop", state.loop);
  el.loop.setAttribute("aria-pressed", state.loop ? "true" : "false");
  el.loop.classList.toggle("is-on", state.loop);
  watchLoop();
}

// Loop: back to the span's start as playback passes its end, checked every frame while playing
// (timeupdate alone comes 4 times a second: a loop would overshoot by up to 250 ms).
let watching = false;
function watchLoop() {
  if (watching) return;
  const step = () => {
    const cur = state.current;
    if (!state.loop || el.player.paused || !cur) {
      watching = false;
      return;
    }
    if (cur.span && el.player.currentTime >= cur.span.end) el.player.currentTime = cur.span.start;
    requestAnimationFrame(step);
  };
  watching = true;
  requestAnimationFrame(step);
}

export function setVolume(v) {
  const volume = Math.max(0, Math.min(1, Number(v)));
  if (!Number.isFinite(volume)) return;
  state.volume = volume;
  if (Math.abs(el.player.volume - volume) > 1e-3) el.player.volume = volume;
  if (Math.abs(Number(el.volume.value) - volume) > 1e-3) el.volume.value = String(volume);
  store.set("volume", volume);
}

export function initPlayer() {
  setLoop(state.loop);
  setVolume(state.volume);
  el.loop.addEventListener("click", () => setLoop(!state.loop));
  el.volume.addEventListener("input", () => setVolume(el.volume.value));
  el.player.addEventListener("volumechange", () => setVolume(el.player.volume));

  let frame = 0;
  el.player.addEventListener("play", watchLoop);
  el.player.addEventListener("timeupdate", () => {
    // The loop again, for a hidden tab, where animation frames stop.
    const cur = state.current;
    if (state.loop && cur && cur.span && el.player.currentTime >= cur.span.end) {
      el.player.currentTime = cur.span.start;
    }
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (state.current && state.current.li) drawWave(Number(state.current.li.dataset.index));
    });
  });
  el.player.addEventListener("ended", () => {
    const cur = state.current;
    if (state.loop && cur) {
      el.player.currentTime = cur.span ? cur.span.start : 0;
      el.player.play();
    }
  });
  for (const type of ["play", "pause", "ended"]) {
    el.player.addEventListener(type, updatePlayButtons);
  }
  el.player.addEventListener("error", () => {
    if (el.player.getAttribute("src")) {
      showError("This recording could not be played (its file may have moved).");
    }
  });
}
