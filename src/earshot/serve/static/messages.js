// The status line and the banner. Every search ends in one of two: a result on the status line,
// or an error in the banner, said on the status line too (so it never stays on "Listening…").
import { el, state } from "./state.js";

export function setBusy(busy, text) {
  state.busy = busy;
  document.body.classList.toggle("is-busy", busy);
  el.results.setAttribute("aria-busy", busy ? "true" : "false");
  if (busy && text) el.status.textContent = text;
}

export function setStatus(text) {
  el.status.textContent = text;
}

/** An error: the banner says it, and the status line ends in it. */
export function showError(message, what = "") {
  el.banner.className = "banner error";
  el.banner.textContent = message;
  el.banner.hidden = false;
  el.status.textContent = what ? `${what}: ${message}` : message;
  el.status.classList.add("is-error");
}

export function showNote(message) {
  el.banner.className = "banner note";
  el.banner.textContent = message;
  el.banner.hidden = false;
}

export function hideBanner() {
  el.status.classList.remove("is-error");
  if (state.untrained) showUntrained();
  else el.banner.hidden = true;
}

export function showUntrained() {
  el.banner.className = "banner warning";
  el.banner.textContent =
    "This server runs an untrained model (--random-init): the ranking is random. Start it with a trained model to search for real.";
  el.banner.hidden = false;
}
