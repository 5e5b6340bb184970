// What the page shows and knows, shared by its modules: the elements it drives and its state.
import { $, store } from "./util.js";

export const el = {
  form: $("search-form"),
  q: $("q"),
  pick: $("pick"),
  file: $("file"),
  folder: $("folder"),
  folderList: $("folder-list"),
  duration: $("duration"),
  formatFilter: $("format-filter"),
  format: $("format"),
  rateFilter: $("rate-filter"),
  rate: $("rate"),
  channelsFilter: $("channels-filter"),
  channels: $("channels"),
  tagFilter: $("tag-filter"),
  tag: $("tag"),
  tagList: $("tag-list"),
  tagChosen: $("tag-chosen"),
  summary: $("catalogue-summary"),
  chips: $("chips"),
  banner: $("banner"),
  status: $("status"),
  verdict: $("verdict"),
  back: $("back"),
  tools: $("result-tools"),
  sort: $("sort"),
  sortLabel: $("sort-label"),
  view: $("view"),
  autoplay: $("autoplay"),
  results: $("results"),
  weak: $("weak-toggle"),
  more: $("more-results"),
  welcome: $("welcome"),
  playerBar: $("player-bar"),
  player: $("player"),
  nowName: $("now-name"),
  loop: $("loop"),
  volume: $("volume"),
  drop: $("drop-overlay"),
};

export const state = {
  hits: [], // the hits of the last search, in order (shown or not)
  items: [], // their <li> elements
  current: null, // {hit, li, span: {start, end}} being played
  last: null, // the last search run: {kind, text | hit | file}
  data: null, // its last answer
  showWeak: false, // weak tails unfolded
  limits: { max_k: 100, max_upload_mb: 20, max_upload_s: 60 },
  untrained: false,
  tags: [], // sound tags every result must have (the tag filter)
  folders: [], // the folders the catalogue holds (the folder filter resolves short forms)
  // What the server offers: {params: {search, similar, like}: Sets of query parameter names,
  // clip: the /api/clip route, sort, syntax: the search box's fields}; from /openapi.json.
  offers: { params: {}, clip: false, sort: false, syntax: false },
  requested: 0, // hits asked for so far (paging)
  compact: store.get("compact", false),
  autoplay: store.get("autoplay", false),
  loop: store.get("loop", false),
  volume: store.get("volume", 1),
};
