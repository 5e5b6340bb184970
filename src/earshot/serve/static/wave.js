// Waveform thumbnails: the server's peaks drawn on each hit's canvas, the matching span lit and
// the played part coloured.
import { api } from "./api.js";
import { el, state } from "./state.js";

const PEAKS_N = 240;
const peaks = new Map(); // file_id -> Promise<{peaks, duration} | null>

export function loadPeaks(hit) {
  if (!peaks.has(hit.file_id)) {
    peaks.set(
      hit.file_id,
      api(`/api/peaks/${hit.file_id}?n=${PEAKS_N}`).catch(() => null),
    );
  }
  return peaks.get(hit.file_id);
}

export async function drawWave(i) {
  const hit = state.hits[i];
  const li = state.items[i];
  if (!hit || !li || !li.isConnected) return;
  const data = await loadPeaks(hit);
  const canvas = li.querySelector("canvas");
  if (!canvas || !li.isConnected) return;
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
  const playing = state.current && state.current.li === li;
  // The span lit: the one being played, else the hit's best.
  const span = playing && state.current.span ? state.current.span : hit;
  const x0 = (span.start / duration) * width;
  const x1 = Math.max(x0 + 2 * dpr, (Math.min(span.end, duration) / duration) * width);

  ctx.fillStyle = colour("--span-bg");
  ctx.fillRect(x0, 0, x1 - x0, height);
  // The file's other matching spans, fainter.
  ctx.globalAlpha = 0.45;
  for (const other of Array.isArray(hit.spans) ? hit.spans : []) {
    if (other.start === span.start && other.end === span.end) continue;
    const a = (other.start / duration) * width;
    const b = Math.max(a + 2 * dpr, (Math.min(other.end, duration) / duration) * width);
    ctx.fillRect(a, 0, b - a, height);
  }
  ctx.globalAlpha = 1;

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

export function redrawAll() {
  state.hits.forEach((_, i) => drawWave(i));
}
