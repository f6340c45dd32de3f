// The viewer: one websocket to the bridge (live or replay: the same wire), panels redrawn as
// frames arrive, a console that sends prompts and selections back.  docs/PROTOCOL.md.

import { FRAME, control, decodeFrame, kindTable, mapsToUnit } from "./protocol.js";
import { drawCell, drawFitted, drawHeat, drawLegend, drawSegments, drawTimeline, rgbToCanvas, wordColor } from "./views.js";
import { DEFAULTS, ParticleSim, gridHomes, phaseWeight, scatteredState } from "./particles.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Everything the page knows; exposed as window.viewer for debugging (and the browser tests).
const view = {
  connection: "connecting",
  state: "idle",
  mode: "live", // or "replay" (status.mode)
  conceptSetting: [], // the bridge's concepts (status), which its next steps map
  concepts: [], // the concept names labelling the latest concept maps (the step's), else the bridge's setting
  conceptSelected: 0, // which concept the concept panel (and, when it follows, the particle morph) shows
  regions: [], // self-attention query regions ({id, box | pixel | polygon | mask} in image pixels), as the bridge reports them
  drag: null, // a box being dragged on the preview: {x0, y0, x1, y1} in image pixels
  run: null, // the run_start message
  selected: 0,
  step: null, // last step message
  ended: null, // run_id of the last run_end (the current run has ended when it is run.run_id)
  mass: [], // mass[step] = per-word shares
  kinds: {}, // map kind name → {maps: [Float32Array], h, w, firstWord} of the last step's frame
  get maps() { return this.kinds.maps || null; },
  get cumulative() { return this.kinds.cumulative || null; },
  preview: document.createElement("canvas"), // latest preview / final image at its own size
  hasPreview: false,
  counts: { binary: 0, json: 0, maps: 0, cumulative: 0, self: 0, concepts: 0, preview: 0, final: 0, steps: 0, runs: 0 },
  errors: [],
  particles: null, // ParticleSim, or null when WebGL2 float rendering is unavailable
  particleError: "",
  phaseTarget: 0, // w from the latest phase weights
  phaseSmooth: 0, // w eased towards the target so the morph never cuts
  phaseHold: null, // w held by the stage's 2/3 keys (null: follow the run)
  law: { ...DEFAULTS, pointSize: 1.5 }, // the particle law, and the drawn points' size in pixels
};
window.viewer = view;

let mapKinds = kindTable(); // frame type code → map kind, replaced by the one hello sends

// ------------------------------------------------------------------ connection

let ws = null;
let retry = 0;

function socketUrl() {
  if (params.get("ws")) return params.get("ws");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = params.get("token");
  return `${scheme}://${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function connect() {
  setConnection("connecting", "connecting…");
  ws = new WebSocket(socketUrl());
  ws.binaryType = "arraybuffer";
  let opened = false;
  ws.onopen = () => {
    opened = true;
    retry = 0;
    setConnection("open", "connected");
  };
  ws.onclose = (ev) => {
    // a refusal at the upgrade (wrong ?token=, a page the bridge does not allow, too many
    // clients) reaches a page only as "closed before it opened": the bridge's log says which
    const why = ev.reason ? `: ${ev.reason}` : opened ? "" : " (refused or unreachable: is the address's ?token= right?)";
    setConnection("closed", `disconnected${why} — retrying`);
    setTimeout(connect, Math.min(5000, 500 * 2 ** retry++));
  };
  ws.onmessage = (ev) => {
    try {
      if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
      else onBinary(decodeFrame(ev.data));
    } catch (err) {
      view.errors.push(String(err));
      showMessage(`could not read a message from the bridge: ${err.message}`);
    }
  };
}

function send(text) {
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    showMessage("not connected to the bridge yet");
    return false;
  }
  ws.send(text);
  return true;
}

function setConnection(state, text) {
  view.connection = state;
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}

// A refusal stays readable: news the page did not ask for (run starts and ends; a replay loops
// every few seconds) does not replace an error for ERROR_HOLD_MS; another error, or what the
// user just did (``mine``), does.
const ERROR_HOLD_MS = 10000;
let errorShownAt = -Infinity;
function showMessage(text, kind = "error", mine = false) {
  const now = performance.now();
  if (kind !== "error" && !mine && now - errorShownAt < ERROR_HOLD_MS) return;
  if (kind === "error") errorShownAt = now;
  $("message").textContent = text;
  $("message").className = kind;
}

// Live and replay share the page; a replay has no prompt to type, but a speed and a Next.
function setMode(mode) {
  view.mode = mode;
  document.body.dataset.mode = mode === "replay" ? "replay" : "live";
}

// ------------------------------------------------------------------ messages

function onJson(msg) {
  view.counts.json++;
  switch (msg.type) {
    case "hello":
      if (msg.limits) applyLimits(msg.limits);
      if (msg.limits) view.limits = msg.limits;
      if (msg.map_kinds) mapKinds = kindTable(msg.map_kinds);
      if (typeof msg.selected === "number") view.selected = msg.selected;
      if (msg.state) setState(msg.state);
      break;
    case "status":
      setState(msg.state);
      if (msg.mode) setMode(msg.mode);
      if (msg.regions) setRegions(msg.regions);
      if (Array.isArray(msg.concepts)) {
        view.conceptSetting = msg.concepts; // what the bridge maps from its next step
        if (document.activeElement !== $("concepts-input")) $("concepts-input").value = msg.concepts.join(", ");
        if (!view.kinds.concepts) setConcepts(msg.concepts); // a shown run's concept maps stay until the next run
      }
      if (msg.replay && Number.isFinite(msg.replay.speed) && document.activeElement !== $("speed")) $("speed").value = msg.replay.speed;
      if (typeof msg.selected === "number") view.selectionRun = msg.run_id ?? null;
      if (typeof msg.selected === "number" && msg.selected !== view.selected) select(msg.selected, false);
      if (msg.settings) fillSettings(msg.settings);
      $("dropped").textContent = msg.dropped ? `${msg.dropped} ${msg.dropped === 1 ? "step" : "steps"} skipped` : "";
      break;
    case "run_start":
      startRun(msg);
      break;
    case "step":
      onStep(msg);
      break;
    case "run_end":
      view.counts.runs++;
      view.ended = msg.run_id;
      showMessage(msg.status === "failed" ? `run failed: ${msg.error}` : `run ${msg.status} after ${msg.steps_done} steps`,
        msg.status === "failed" ? "error" : "info");
      break;
    case "error":
      view.errors.push(msg.message);
      showMessage(msg.message);
      break;
    default:
      break; // later protocol additions: ignore
  }
}

function onBinary(frame) {
  view.counts.binary++;
  const kind = mapKinds.get(frame.type);
  if (kind) {
    view.kinds[kind.name] = mapsToUnit(frame);
    view.counts[kind.name] = (view.counts[kind.name] || 0) + 1;
    if (kind.name === "cumulative" || kind.name === "self" || kind.name === "concepts") updateParticleAttention();
    drawMaps();
  } else if (frame.type === FRAME.PREVIEW || frame.type === FRAME.FINAL) {
    const [h, w] = frame.shape;
    rgbToCanvas(view.preview, frame.data, w, h);
    view.hasPreview = true;
    view.counts[frame.type === FRAME.PREVIEW ? "preview" : "final"]++;
    drawPreview();
    view.lastPreview = { data: frame.data, w, h }; // for a particle system made later (a slow renderer's smaller one)
    if (view.particles) view.particles.setPreview(frame.data, w, h);
    drawMaps();
  }
}

function setState(state) {
  view.state = state;
  $("state").textContent = state;
}

let settingsFilled = false;
function fillSettings(s) {
  if (settingsFilled) return; // never overwrite what the user is typing
  settingsFilled = true;
  if (s.prompt && !$("prompt").value) $("prompt").value = s.prompt;
  if (Number.isInteger(s.seed)) $("seed").value = s.seed;
  if (Number.isInteger(s.steps)) $("steps").value = s.steps;
}

function startRun(msg) {
  view.run = msg;
  view.mass = [];
  view.kinds = {};
  view.step = null;
  // A run starts on its focus word (bridge/wordpick.py), unless a status of this very run
  // already said what is selected (a page that joins after someone picked a word).
  if (Number.isInteger(msg.focus) && view.selectionRun !== msg.run_id) view.selected = msg.focus;
  if (view.selected >= msg.words.length) view.selected = 0;
  buildWords(msg.words);
  $("step").textContent = `step 0/${msg.steps}`;
  if (msg.dropped_words && msg.dropped_words.length) {
    showMessage(`the model's token limit cut: ${msg.dropped_words.join(" ")}`, "info");
  } else {
    showMessage(`run ${msg.run_id}: “${msg.prompt}”, seed ${msg.seed}`, "info");
  }
  scatterParticles();
  drawMaps();
  redrawTimeline();
}

function onStep(msg) {
  view.step = msg;
  if (!msg.regions && view.kinds.self) delete view.kinds.self; // a step without regions has no self map
  if (!msg.concepts && view.kinds.concepts) delete view.kinds.concepts; // nor one without concepts a concept map
  if (msg.concepts) setConcepts(msg.concepts);
  view.counts.steps++;
  view.mass[msg.step] = msg.mass;
  view.phaseTarget = phaseWeight(msg.phase_weights, view.law.phaseGain);
  $("step").textContent = `step ${msg.step + 1}/${msg.total} · ${msg.phase}`;
  document.querySelectorAll(".phase").forEach((el, i) => {
    el.style.background = `rgba(249, 142, 9, ${0.15 + 0.85 * msg.phase_weights[i]})`;
    el.style.color = msg.phase_weights[i] > 0.5 ? "#000" : "";
  });
  redrawTimeline();
}

// ------------------------------------------------------------------ words and selection

function buildWords(words) {
  const chips = $("words");
  const grid = $("grid");
  chips.replaceChildren();
  grid.replaceChildren();
  words.forEach((word, i) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "word";
    chip.textContent = word;
    chip.style.color = wordColor(i);
    chip.dataset.index = i;
    chip.addEventListener("click", () => select(i, true));
    chips.append(chip);

    const fig = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 128;
    canvas.dataset.index = i;
    canvas.addEventListener("click", () => select(i, true));
    const cap = document.createElement("figcaption");
    cap.textContent = `${i}: ${word}`;
    fig.append(canvas, cap);
    grid.append(fig);
  });
  markSelected();
}

function select(i, tellBridge) {
  view.selected = i;
  if (tellBridge) send(control.select(i)); // TouchDesigner and OSC follow the same selection
  markSelected();
  updateParticleAttention();
  drawMaps();
  redrawTimeline();
}

function markSelected() {
  const word = view.run ? view.run.words[view.selected] ?? "–" : "–";
  $("heat-word").textContent = word;
  $("particle-word").textContent = word;
  document.querySelectorAll(".word").forEach((el) => el.setAttribute("aria-pressed", String(+el.dataset.index === view.selected)));
  document.querySelectorAll("#grid figure").forEach((fig, i) => fig.classList.toggle("selected", i === view.selected));
}

function wordMap(source, i) {
  if (!source) return null;
  const k = i - source.firstWord;
  return k >= 0 && k < source.maps.length ? source.maps[k] : null;
}

// The preview shows the query regions; a drag on it sets a box, a click a pixel.
function drawPreview() {
  const canvas = $("preview");
  drawFitted(canvas, view.hasPreview ? view.preview : null);
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = 2;
  const boxes = view.regions.filter((r) => r.box).map((r) => r.box);
  if (view.drag && !view.drag.path) boxes.push([view.drag.x0, view.drag.y0, view.drag.x1, view.drag.y1]);
  for (const [x0, y0, x1, y1] of boxes) {
    const [a, b] = toCanvas(x0, y0), [c, d] = toCanvas(x1, y1);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(a, b, c - a, d - b);
  }
  const contours = view.regions.filter((r) => r.polygon).map((r) => r.polygon);
  if (view.drag && view.drag.path) contours.push(view.drag.path);
  for (const points of contours) {
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(...toCanvas(x, y)) : ctx.moveTo(...toCanvas(x, y))));
    ctx.closePath();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  for (const r of view.regions.filter((r) => r.pixel)) {
    const [a, b] = toCanvas(...r.pixel);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(a - 4, b - 4, 8, 8);
  }
}

// Image pixels ↔ preview canvas pixels: the image is drawn fitted (aspect kept) into the canvas.
function imageFit() {
  const canvas = $("preview");
  const W = view.run ? view.run.width : canvas.width, H = view.run ? view.run.height : canvas.height;
  const s = Math.min(canvas.width / W, canvas.height / H);
  return { W, H, s, ox: (canvas.width - W * s) / 2, oy: (canvas.height - H * s) / 2 };
}

function toCanvas(x, y) {
  const f = imageFit();
  return [f.ox + x * f.s, f.oy + y * f.s];
}

function toImage(ev) {
  const canvas = $("preview"), rect = canvas.getBoundingClientRect(), f = imageFit();
  const cx = (ev.clientX - rect.left) * (canvas.width / rect.width), cy = (ev.clientY - rect.top) * (canvas.height / rect.height);
  const clamp = (v, hi) => Math.round(Math.min(hi, Math.max(0, v)) * 10) / 10;
  return [clamp((cx - f.ox) / f.s, f.W), clamp((cy - f.oy) / f.s, f.H)];
}

function wireRegions() {
  const canvas = $("preview");
  // Shift-drag draws a contour instead of a box: the path becomes a polygon region.
  canvas.addEventListener("pointerdown", (ev) => {
    if (view.mode === "replay") return;
    const [x, y] = toImage(ev);
    view.drag = { x0: x, y0: y, x1: x, y1: y, path: ev.shiftKey ? [[x, y]] : null };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!view.drag) return;
    [view.drag.x1, view.drag.y1] = toImage(ev);
    const path = view.drag.path;
    if (path) {
      const [px, py] = path[path.length - 1];
      if (Math.hypot(view.drag.x1 - px, view.drag.y1 - py) * imageFit().s >= 3) path.push([view.drag.x1, view.drag.y1]);
    }
    drawPreview();
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!view.drag) return;
    const { x0, y0, x1, y1, path } = view.drag;
    view.drag = null;
    const f = imageFit();
    let region;
    if (path && path.length >= 3) {
      region = { id: "contour", polygon: thin(path, view.limits?.regions?.max_points || 64) };
    } else if (Math.hypot(x1 - x0, y1 - y0) * f.s < 4) {
      region = { id: "pixel", pixel: [x0, y0] };
    } else {
      region = { id: "box", box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)] };
    }
    if (send(control.regions([region]))) showMessage(`self-attention of the ${region.id}: from the next step`, "info", true);
    drawPreview();
  });
  $("clear-regions").addEventListener("click", () => send(control.regions([])));
  $("follow-region").addEventListener("change", updateParticleAttention);
}

// At most ``n`` of the path's points, evenly spread along it (the bridge's polygon limit).
function thin(path, n) {
  if (path.length <= n) return path;
  return Array.from({ length: n }, (_, i) => path[Math.round((i * (path.length - 1)) / (n - 1))]);
}

// Concepts: any words, typed in the console; the bridge maps each from the next step on.
function wireConcepts() {
  const input = $("concepts-input");
  const submit = () => {
    const names = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (send(control.concepts(names))) showMessage(names.length ? `concepts ${names.join(", ")}: from the next step` : "concepts cleared", "info", true);
  };
  input.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault(); // Enter here sets the concepts; it does not start a run
    submit();
  });
  $("concept-segments").addEventListener("change", drawMaps);
  $("follow-concept").addEventListener("change", updateParticleAttention);
}

function setConcepts(names) {
  if (!Array.isArray(names)) return;
  const same = names.length === view.concepts.length && names.every((n, i) => n === view.concepts[i]);
  view.concepts = names;
  document.body.dataset.concepts = String(names.length); // the concept panel shows while there are some
  if (same) return;
  if (view.conceptSelected >= names.length) view.conceptSelected = 0;
  const chips = $("concept-chips");
  chips.replaceChildren(...names.map((name, i) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "word";
    chip.textContent = name;
    chip.style.color = wordColor(i);
    chip.addEventListener("click", () => selectConcept(i));
    return chip;
  }));
  selectConcept(view.conceptSelected);
}

function selectConcept(i) {
  view.conceptSelected = i;
  document.querySelectorAll("#concept-chips .word").forEach((el, k) => el.setAttribute("aria-pressed", String(k === i)));
  drawMaps();
  updateParticleAttention();
}

function setRegions(regions) {
  if (!Array.isArray(regions)) return;
  view.regions = regions;
  document.body.dataset.regions = String(regions.length); // the self-attention panel shows while there are some
  const r = regions[0];
  $("self-region").textContent = !r ? "drag a box on the preview"
    : r.box ? `box ${r.box.map(Math.round).join(", ")}`
    : r.polygon ? `contour of ${r.polygon.length} points`
    : r.mask ? `mask of ${r.mask.size.join("×")} px` : `pixel ${r.pixel.map(Math.round).join(", ")}`;
  drawPreview();
  drawMaps();
  updateParticleAttention();
}

function drawMaps() {
  const source = $("cumulative").checked ? view.cumulative || view.maps : view.maps || view.cumulative;
  const map = wordMap(source, view.selected);
  drawHeat($("heat"), view.hasPreview ? view.preview : null, map, source?.w, source?.h);
  const self = view.kinds.self;
  drawHeat($("self"), view.hasPreview ? view.preview : null, self && view.regions.length ? self.maps[0] : null, self?.w, self?.h);
  const concepts = view.kinds.concepts;
  const background = view.hasPreview ? view.preview : null;
  if (concepts && $("concept-segments").checked) drawSegments($("concept"), background, concepts);
  else drawHeat($("concept"), background, concepts ? wordMap(concepts, view.conceptSelected) : null, concepts?.w, concepts?.h);
  document.querySelectorAll("#grid canvas").forEach((canvas, i) => {
    drawCell(canvas, wordMap(source, i), source?.w, source?.h);
  });
}

function redrawTimeline() {
  drawTimeline($("timeline"), {
    mass: view.mass,
    total: view.run ? view.run.steps : 0,
    words: view.run ? view.run.words : [],
    phases: view.run ? view.run.phases : null,
    selected: view.selected,
  });
}

// ------------------------------------------------------------------ particles

function startParticles() {
  const canvas = $("particles");
  const gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: false });
  try {
    if (!gl) throw new Error("this browser has no WebGL2; the particle morph is off");
    const count = Math.max(1, Math.min(1 << 20, Number(params.get("particles")) || DEFAULTS.count));
    view.particles = new ParticleSim(gl, Math.ceil(Math.sqrt(count)));
    view.particles.setHomes(gridHomes(view.particles.count, 1));
    scatterParticles();
    requestAnimationFrame(animate);
  } catch (err) {
    view.particleError = String(err.message || err);
    $("particle-word").textContent = view.particleError;
  }
}

// A slow renderer (software GL on a projector PC) gets fewer particles, a quarter at a time down
// to MIN_PARTICLES, so the morph keeps its pace and the page answers at once.  Only when the
// count was not asked for (?particles=N is obeyed).
const SLOW_FRAME_S = 1 / 24;
const MIN_PARTICLES = 4096;
const frameTimes = [];
function checkRenderer(elapsed) {
  const sim = view.particles;
  if (params.get("particles") || !sim || sim.count <= MIN_PARTICLES) return;
  frameTimes.push(elapsed);
  if (frameTimes.length < 40) return;
  const median = [...frameTimes.slice(10)].sort((a, b) => a - b)[15]; // the first frames warm up
  frameTimes.length = 0;
  if (median <= SLOW_FRAME_S) return;
  const count = Math.max(MIN_PARTICLES, sim.count >> 2);
  view.particles = new ParticleSim(sim.gl, Math.ceil(Math.sqrt(count)));
  view.particles.setHomes(gridHomes(view.particles.count, 1));
  const phase = view.phaseTarget;
  scatterParticles();
  view.phaseTarget = phase; // the run's phase, not the renderer's: after a run the fewer particles gather again
  if (view.lastPreview) view.particles.setPreview(view.lastPreview.data, view.lastPreview.w, view.lastPreview.h);
  updateParticleAttention();
  view.particleNote = `${view.particles.count} particles: this browser draws slowly (${Math.round(1 / median)} frames/s)`;
  $("particles").title = view.particleNote;
}

let scatterSeed = 7;
function scatterParticles() {
  const sim = view.particles;
  if (!sim) return;
  sim.setState(scatteredState(sim.count, scatterSeed++), sim.time);
  view.phaseSmooth = view.phaseTarget = 0;
}

function updateParticleAttention() {
  const sim = view.particles;
  const region = $("follow-region").checked && view.kinds.self && view.regions.length ? view.kinds.self : null;
  const concept = !region && $("follow-concept").checked && view.kinds.concepts ? view.kinds.concepts : null;
  const source = region || concept || view.cumulative || view.maps;
  const map = region ? region.maps[0] : wordMap(source, concept ? view.conceptSelected : view.selected);
  if (sim && map) sim.setAttention(map, source.w, source.h);
}

// The morph runs on real time: a browser that draws 15 frames a second takes 4 simulation
// steps per frame (at most MAX_STEPS_PER_FRAME), so the star forms as fast as on a fast one.
const MAX_STEPS_PER_FRAME = 8;
let last = 0;
let owed = 0; // simulated seconds not yet stepped
function animate(now) {
  const sim = view.particles;
  const elapsed = last ? Math.min(0.25, (now - last) / 1000) : view.law.dt;
  last = now;
  // Ease w towards the newest phase weight (time constant 0.5 s): no hard cuts between steps.
  const target = view.phaseHold ?? view.phaseTarget; // a stage key may hold the morph
  view.phaseSmooth += (target - view.phaseSmooth) * (1 - Math.exp(-elapsed / 0.5));
  owed = Math.min(owed + elapsed, MAX_STEPS_PER_FRAME * view.law.dt);
  let steps = 0;
  while (owed >= view.law.dt * 0.999 && steps < MAX_STEPS_PER_FRAME) {
    sim.step(view.law, view.phaseSmooth);
    owed -= view.law.dt;
    steps++;
  }
  view.counts.simSteps = (view.counts.simSteps || 0) + steps;
  checkRenderer(elapsed);
  // points scale with the canvas, so the stage view's full-window morph looks like the panel's
  const scale = Math.max(1, $("particles").height / PANEL_SIZE);
  sim.draw({ aspect: view.run ? view.run.width / view.run.height : 1, pointSize: view.law.pointSize * scale });
  view.counts.particleFrames = (view.counts.particleFrames || 0) + 1;
  requestAnimationFrame(animate);
}

// ------------------------------------------------------------------ stage view

// ?stage (or the S key): one full-window picture for a projector — the particle morph, or the
// heat map over the image — no chrome, no cursor.  Keys: ←/→ word, P particles/heat,
// C cumulative/step map, 1 2 3 phase (follow / chaos / formed), [ ] attraction, - = wind,
// , . point size, R scatter, H help, Esc or S leave.
const PANEL_SIZE = 384; // the panels' canvas size outside the stage (index.html)
const STAGE_KEYS = [
  ["← →", "previous / next word"], ["P", "particles or heat map"], ["C", "cumulative or this step's map"],
  ["1 2 3", "particles follow the run's phases / hold the chaos / hold the formed image"],
  ["[ ]", "attraction − / +"], ["- =", "wind − / +"], [", .", "point size − / +"], ["R", "scatter the particles"],
  ["H", "this help"], ["S, Esc", "leave the stage"],
];
const PHASE_HOLDS = { 1: null, 2: 0, 3: 1 }; // key → held morph weight w (null: the run's phases)
const PHASE_NOTES = { 1: "phases: follow the run", 2: "phases: hold the chaos", 3: "phases: hold the image" };

function setStage(on, what = view.stage || "particles") {
  view.stage = on ? what : null;
  document.body.dataset.stage = on ? what : "";
  if (on) fitStage();
  else {
    for (const id of ["particles", "heat"]) $(id).width = $(id).height = PANEL_SIZE;
    drawMaps();
  }
}

// The stage canvas fills the window (aspect kept by the drawing code), at the screen's pixels.
function fitStage() {
  const canvas = $(view.stage === "heat" ? "heat" : "particles");
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(window.innerWidth * dpr);
  canvas.height = Math.round(window.innerHeight * dpr);
  drawMaps();
}

function nudge(name, delta, lo, hi) {
  view.law[name] = Math.min(hi, Math.max(lo, view.law[name] + delta));
  const input = document.querySelector(`#controls input[data-param="${name}"]`);
  if (input) input.value = view.law[name];
  showStageNote(`${name} ${view.law[name].toFixed(2)}`);
}

function showStageNote(text) {
  const note = $("stage-note");
  note.textContent = text;
  note.dataset.shown = String(performance.now());
  setTimeout(() => { if (performance.now() - Number(note.dataset.shown) >= 1900) note.textContent = ""; }, 2000);
}

function wireStage() {
  $("stage-help").innerHTML = STAGE_KEYS.map(([k, v]) => `<div><b>${k}</b> ${v}</div>`).join("");
  window.addEventListener("resize", () => { if (view.stage) fitStage(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement) return; // typing a prompt is not a shortcut
    const key = ev.key;
    if (!view.stage) {
      if (key === "s" || key === "S") setStage(true);
      return;
    }
    const words = view.run ? view.run.words.length : 0;
    if (key === "Escape" || key === "s" || key === "S") setStage(false);
    else if ((key === "ArrowRight" || key === "ArrowLeft") && words) {
      select((view.selected + (key === "ArrowRight" ? 1 : words - 1)) % words, true);
      showStageNote(view.run.words[view.selected]);
    } else if (key === "p" || key === "P") {
      setStage(false);
      setStage(true, view.stage === "heat" ? "particles" : "heat");
    } else if (key === "c" || key === "C") {
      $("cumulative").checked = !$("cumulative").checked;
      drawMaps();
    } else if (key === "[" || key === "]") nudge("attraction", key === "]" ? 1 : -1, 0, 30);
    else if (key === "-" || key === "=") nudge("wind", key === "=" ? 0.25 : -0.25, 0, 5);
    else if (key === "," || key === ".") nudge("pointSize", key === "." ? 0.25 : -0.25, 0.5, 6);
    else if (key in PHASE_HOLDS) {
      view.phaseHold = PHASE_HOLDS[key];
      showStageNote(PHASE_NOTES[key]);
    }
    else if (key === "r" || key === "R") scatterParticles();
    else if (key === "h" || key === "H") $("stage-help").hidden = !$("stage-help").hidden;
    else return;
    ev.preventDefault();
  });
  if (params.has("stage")) setStage(true, params.get("stage") === "heat" ? "heat" : "particles");
}

// ------------------------------------------------------------------ console

// The server's bounds (hello.limits, bridge/limits.py) replace the page's own attributes, so
// the spinners and the random seed stay inside them.  The form still sends what is typed
// (novalidate): the bridge's refusal names the field better than a browser tooltip.
function applyLimits(limits) {
  if (limits.prompt && Number.isInteger(limits.prompt.max_chars)) $("prompt").maxLength = limits.prompt.max_chars;
  if (limits.speed && Number.isFinite(limits.speed.min) && Number.isFinite(limits.speed.max)) {
    $("speed").min = limits.speed.min;
    $("speed").max = limits.speed.max;
  }
  for (const name of ["seed", "steps"]) {
    const bound = limits[name];
    if (bound && Number.isFinite(bound.min) && Number.isFinite(bound.max)) {
      $(name).min = bound.min;
      $(name).max = bound.max;
    }
  }
}

function wireConsole() {
  $("console").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) {
      showMessage("type a prompt first");
      return;
    }
    if ($("random-seed").checked) $("seed").value = Math.floor(Math.random() * (Number($("seed").max) + 1));
    const settings = {};
    for (const name of ["seed", "steps"]) {
      const value = Number($(name).value);
      if (!Number.isInteger(value)) {
        showMessage(`${name} must be a whole number`);
        return;
      }
      settings[name] = value;
    }
    if (send(control.prompt(prompt, settings))) showMessage(`sent: “${prompt}”`, "info", true);
  });
  for (const name of ["pause", "resume", "cancel", "next"]) $(name).addEventListener("click", () => send(control.action(name)));
  $("speed").addEventListener("change", () => {
    const speed = Number($("speed").value);
    if (send(control.speed(speed))) showMessage(`replay speed ×${speed}`, "info", true);
  });
  $("cumulative").addEventListener("change", drawMaps);
  document.querySelectorAll("#controls input").forEach((input) => {
    const apply = () => { view.law[input.dataset.param] = Number(input.value); };
    input.addEventListener("input", apply);
    apply();
  });
}

wireConsole();
wireRegions();
wireConcepts();
wireStage();
drawLegend($("legend-ramp"));
redrawTimeline();
drawMaps();
startParticles();
connect();
