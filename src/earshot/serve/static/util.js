// Small helpers every part of the page uses: formatting times and folders, making elements,
// remembering settings.

export const $ = (id) => document.getElementById(id);

/** An element with a class, text, attributes and children: make("span", {class: "x"}, "hi"). */
export function make(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "html") node.innerHTML = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

/** 75 -> "1:15", 3725 -> "1:02:05" (whole seconds). */
export function clock(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** A length a person can read at any scale: 0.35 -> "0.35 s", 4.2 -> "4.20 s", 12 -> "12.0 s",
 * 75 -> "1:15" (as precise as `moment` and `spanText` are inside such a recording). */
export function length(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  return clock(s);
}

/** A moment inside a recording of `duration` seconds, as precise as the recording needs. */
export function moment(seconds, duration) {
  const s = Math.max(0, Number(seconds) || 0);
  if (duration != null && duration < 60) return `${s.toFixed(duration < 10 ? 2 : 1)} s`;
  return clock(s);
}

/** A span inside a recording: "0.10–0.45 s" in a short one, "1:05–1:09" in a long one. */
export function spanText(start, end, duration) {
  if (duration != null && duration < 60) {
    const digits = duration < 10 ? 2 : 1;
    return `${Number(start).toFixed(digits)}–${Number(end).toFixed(digits)} s`;
  }
  return `${clock(start)}–${clock(end)}`;
}

export function shortFolder(folder) {
  const parts = String(folder).split(/[\\/]/).filter(Boolean);
  if (parts.length <= 2) return folder;
  return `…/${parts.slice(-2).join("/")}`;
}

export function hours(h) {
  if (h >= 1) return `${h.toFixed(1)} h`;
  const minutes = h * 60;
  return minutes >= 1 ? `${Math.round(minutes)} min` : `${Math.round(minutes * 60)} s`;
}

/** 48000 -> "48 kHz", 44100 -> "44.1 kHz". */
export function rate(hz) {
  const k = Number(hz) / 1000;
  return `${Number.isInteger(k) ? k : k.toFixed(1)} kHz`;
}

export function channelsText(n) {
  if (n === 1) return "mono";
  if (n === 2) return "stereo";
  return `${n} ch`;
}

export const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

/** Settings kept in localStorage (a private window may refuse: then they last the visit). */
export const store = {
  get(key, fallback) {
    try {
      const value = window.localStorage.getItem(`earshot.${key}`);
      return value == null ? fallback : JSON.parse(value);
    } catch (_) {
      return fallback;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(`earshot.${key}`, JSON.stringify(value));
    } catch (_) {
      // Not remembered; it still applies now.
    }
  },
};

export const ICON_PLAY =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5.5v13a1 1 0 0 0 1.5.86l10.4-6.5a1 1 0 0 0 0-1.72L9.5 4.64A1 1 0 0 0 8 5.5Z"/></svg>';
export const ICON_PAUSE =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="6.5" y="5" width="4" height="14" rx="1"/><rect x="13.5" y="5" width="4" height="14" rx="1"/></svg>';
