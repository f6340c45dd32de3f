// Drawing for the viewer's 2-D panels: preview, heat map, word grid, attention-mass timeline.
// Pure functions of (canvas, data); app.js decides when to call them.

import { HEAT, WORDS } from "./palette.js";

// The product's heat ramp (bridge/palette.py, also TouchDesigner's and the timelapse's):
// evenly spaced stops, piecewise linear (0..1 → [r, g, b]).
const STOPS = HEAT.map((rgb, i) => [i / (HEAT.length - 1), rgb]);
export const LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < STOPS.length - 2 && t > STOPS[k + 1][0]) k++;
    const [t0, c0] = STOPS[k];
    const [t1, c1] = STOPS[k + 1];
    const f = (t - t0) / (t1 - t0);
    for (let c = 0; c < 3; c++) lut[3 * i + c] = c0[c] + (c1[c] - c0[c]) * f;
  }
  return lut;
})();

// Word i's colour in the timeline and chips: the product's word colours (bridge/palette.py).
export function wordColor(i, alpha = 1) {
  const [r, g, b] = WORDS[i % WORDS.length];
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

const scratch = document.createElement("canvas");

/** A 0..1 map (Float32Array h × w) as an RGBA canvas; alpha follows the value when `overlay`. */
function mapCanvas(map, w, h, overlay) {
  scratch.width = w;
  scratch.height = h;
  const ctx = scratch.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = Math.max(0, Math.min(255, Math.round(map[i] * 255)));
    img.data[4 * i] = LUT[3 * v];
    img.data[4 * i + 1] = LUT[3 * v + 1];
    img.data[4 * i + 2] = LUT[3 * v + 2];
    img.data[4 * i + 3] = overlay ? Math.round(60 + 195 * map[i]) : 255;
  }
  ctx.putImageData(img, 0, 0);
  return scratch;
}

/** RGB8 bytes (row 0 at the top) as an ImageBitmap-like canvas source. */
export function rgbToCanvas(canvas, rgb, w, h) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0, j = 0; i < w * h; i++, j += 3) {
    img.data[4 * i] = rgb[j];
    img.data[4 * i + 1] = rgb[j + 1];
    img.data[4 * i + 2] = rgb[j + 2];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

/** Draw an image source scaled to fill ``canvas`` (aspect kept, letterboxed). */
export function drawFitted(canvas, source, { smooth = true, alpha = 1, clear = true } = {}) {
  const ctx = canvas.getContext("2d");
  if (clear) {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  if (!source || !source.width) return;
  const s = Math.min(canvas.width / source.width, canvas.height / source.height);
  const w = source.width * s, h = source.height * s;
  ctx.imageSmoothingEnabled = smooth;
  ctx.globalAlpha = alpha;
  ctx.drawImage(source, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  ctx.globalAlpha = 1;
}

/** Heat map of one word over a dimmed preview. */
export function drawHeat(canvas, previewCanvas, map, w, h) {
  drawFitted(canvas, previewCanvas, { alpha: 0.35 });
  if (map) drawFitted(canvas, mapCanvas(map, w, h, true), { clear: false });
}

/** Each pixel in the colour of the label (concept) whose map holds it most, over a dimmed preview:
 * a segmentation, as export's masks (argmax over the labels; here of the maps as sent, each ÷ its peak). */
export function drawSegments(canvas, previewCanvas, { maps, w, h }) {
  drawFitted(canvas, previewCanvas, { alpha: 0.45 });
  if (!maps.length) return;
  scratch.width = w;
  scratch.height = h;
  const ctx = scratch.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    let best = 0;
    for (let k = 1; k < maps.length; k++) if (maps[k][i] > maps[best][i]) best = k;
    const [r, g, b] = WORDS[best % WORDS.length];
    img.data.set([r, g, b, Math.round(90 + 130 * maps[best][i])], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  drawFitted(canvas, scratch, { clear: false });
}

/** The heat ramp left (no attention) to right (a map's peak): the legend of every heat map. */
export function drawLegend(canvas) {
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x++) {
    const v = Math.round((255 * x) / Math.max(1, canvas.width - 1));
    ctx.fillStyle = `rgb(${LUT[3 * v]}, ${LUT[3 * v + 1]}, ${LUT[3 * v + 2]})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

/** A small heat map (no preview) into a grid cell's canvas. */
export function drawCell(canvas, map, w, h) {
  drawFitted(canvas, map ? mapCanvas(map, w, h, false) : null);
}

/**
 * Attention-mass timeline: one line per word over the run's steps, phase spans shaded.
 * `mass[step][word]`, `phases` = {noise, structure, detail} fractions, `selected` drawn bold.
 */
export function drawTimeline(canvas, { mass, total, words, phases, selected }) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 6;
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, W, H);
  if (!total) return;
  const x = (step) => pad + ((step + 0.5) / total) * (W - 2 * pad);
  if (phases) {
    const spans = [["noise", "#1b1b2a"], ["structure", "#16222a"], ["detail", "#182a1b"]];
    let start = 0;
    for (const [name, color] of spans) {
      const frac = phases[name] ?? 0;
      ctx.fillStyle = color;
      ctx.fillRect(pad + start * (W - 2 * pad), 0, frac * (W - 2 * pad), H);
      ctx.fillStyle = "#667";
      ctx.font = "11px sans-serif";
      ctx.fillText(name, pad + start * (W - 2 * pad) + 4, 12);
      start += frac;
    }
  }
  // Steps this page never got (it joined mid-run, or fell behind) are holes in `mass`:
  // the lines break there and pick up again at the next step that came.
  const rows = [];
  mass.forEach((row, step) => { if (Array.isArray(row)) rows.push([step, row]); });
  let peak = 0;
  for (const [, row] of rows) for (const m of row) if (Number.isFinite(m)) peak = Math.max(peak, m);
  peak = peak || 1;
  const y = (m) => H - pad - (m / peak) * (H - 2 * pad - 14);
  const order = words.map((_, i) => i).filter((i) => i !== selected).concat(selected < words.length ? [selected] : []);
  for (const i of order) {
    ctx.strokeStyle = wordColor(i, i === selected ? 1 : 0.55);
    ctx.lineWidth = i === selected ? 3 : 1.25;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    const has = (step) => Array.isArray(mass[step]) && Number.isFinite(mass[step][i]);
    for (const [step, row] of rows) {
      if (!has(step)) continue;
      const px = x(step), py = y(row[i]);
      if (has(step - 1)) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      if (!has(step - 1) && !has(step + 1)) ctx.fillRect(px - ctx.lineWidth, py - ctx.lineWidth, 2 * ctx.lineWidth, 2 * ctx.lineWidth);
    }
    ctx.stroke();
  }
}
