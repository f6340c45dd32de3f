// The bridge's wire protocol, version 1 (docs/PROTOCOL.md), browser side: decode binary
// frames, build control messages.  No I/O here; app.js owns the websocket.

export const FRAME = Object.freeze({ MAPS: 1, CUMULATIVE: 2, PREVIEW: 3, FINAL: 4 });

// The bridge's map kinds (bridge/mapkinds.py) until its `hello` sends the table; a test keeps
// this copy equal to the Python table.
export const MAP_KINDS = Object.freeze([
  { name: "maps", code: 1, labels: "words", normalization: "peak" },
  { name: "cumulative", code: 2, labels: "words", normalization: "peak" },
  { name: "self", code: 5, labels: "regions", normalization: "peak" },
  { name: "selfgrid", code: 6, labels: "cells", normalization: "peak" },
  { name: "concepts", code: 7, labels: "concepts", normalization: "peak" },
]);

/** Frame type code → map kind ({name, code, labels, …}), from hello.map_kinds when sent. */
export function kindTable(kinds = MAP_KINDS) {
  return new Map((Array.isArray(kinds) ? kinds : MAP_KINDS).map((k) => [k.code, k]));
}
const MAGIC = 0x4d414144; // "DAAM" read as a little-endian uint32
const HEADER_SIZE = 36;

/** IEEE half-precision bits → number (for float16 map subscriptions). */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** Decode one binary frame (an ArrayBuffer) into its header fields and a typed-array view. */
export function decodeFrame(buf) {
  if (buf.byteLength < HEADER_SIZE) throw new Error(`binary frame too short (${buf.byteLength} bytes)`);
  const v = new DataView(buf);
  if (v.getUint32(0, true) !== MAGIC || v.getUint8(4) !== 1) throw new Error("not a DAAM v1 frame");
  const type = v.getUint8(5);
  const dtype = v.getUint8(6);
  const [run, step, total, firstWord] = [8, 12, 16, 20].map((o) => v.getUint32(o, true));
  const shape = [24, 28, 32].map((o) => v.getUint32(o, true));
  const n = shape[0] * shape[1] * shape[2];
  const size = { 1: 1, 2: 2, 3: 4 }[dtype];
  if (!size) throw new Error(`unknown dtype ${dtype}`);
  if (buf.byteLength < HEADER_SIZE + n * size) throw new Error("binary frame shorter than its shape");
  const data =
    dtype === 1 ? new Uint8Array(buf, HEADER_SIZE, n)
    : dtype === 2 ? new Uint16Array(buf.slice(HEADER_SIZE, HEADER_SIZE + 2 * n))
    : new Float32Array(buf.slice(HEADER_SIZE, HEADER_SIZE + 4 * n));
  return { type, dtype, run, step, total, firstWord, shape, data };
}

/**
 * Maps of a frame as one Float32Array (0..1) per word, each scaled by its own peak
 * (uint8 frames are already normalised by the bridge; float frames are normalised here).
 */
export function mapsToUnit(frame) {
  const [words, h, w] = frame.shape;
  const out = [];
  for (let k = 0; k < words; k++) {
    const m = new Float32Array(h * w);
    const off = k * h * w;
    if (frame.dtype === 1) {
      for (let i = 0; i < h * w; i++) m[i] = frame.data[off + i] / 255;
    } else {
      let peak = 0;
      for (let i = 0; i < h * w; i++) {
        const x = frame.dtype === 2 ? halfToFloat(frame.data[off + i]) : frame.data[off + i];
        m[i] = x;
        if (x > peak) peak = x;
      }
      if (peak > 0) for (let i = 0; i < h * w; i++) m[i] /= peak;
    }
    out.push(m);
  }
  return { maps: out, h, w, firstWord: frame.firstWord };
}

export const control = {
  prompt: (prompt, settings = {}) => JSON.stringify({ type: "prompt", prompt, ...settings }),
  set: (settings) => JSON.stringify({ type: "set", ...settings }),
  select: (word) => JSON.stringify({ type: "select", word }),
  action: (name) => JSON.stringify({ type: name }),
  speed: (speed) => JSON.stringify({ type: "speed", speed }),
  regions: (regions) => JSON.stringify({ type: "regions", regions }),
  concepts: (concepts) => JSON.stringify({ type: "concepts", concepts }),
};
