// In-browser decoding: the served model's exported prompt decoder in onnxruntime-web (shipped with
// the page's assets), on the image embedding downloaded once as safetensors; the server's mask
// post-processing (mask choice, bilinear upscale, threshold 0) in JavaScript. No request per click.

import { encodeRle } from "./rle.js";

/** {name: {dtype, shape, data: Float32Array}} and the metadata of a safetensors file. */
export function readSafetensors(buffer) {
  const view = new DataView(buffer), n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const out = {}, base = 8 + n;
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [a, b] = t.data_offsets, bytes = new Uint8Array(buffer.slice(base + a, base + b));
    let data;
    if (t.dtype === "F32") data = new Float32Array(bytes.buffer);
    else if (t.dtype === "BF16") {  // bfloat16: the high half of a float32
      const half = new Uint16Array(bytes.buffer), wide = new Uint32Array(half.length);
      for (let i = 0; i < half.length; i++) wide[i] = half[i] << 16;
      data = new Float32Array(wide.buffer);
    } else throw new Error(`embeddings: unsupported dtype ${t.dtype}`);
    out[name] = { dtype: t.dtype, shape: t.shape, data };
  }
  return { tensors: out, metadata: header.__metadata__ || {} };
}

/** Bilinear resize (align_corners=false, as torch's F.interpolate) of an (h, w) grid to (H, W), thresholded at 0. */
export function upscaleMask(logits, h, w, H, W) {
  const mask = new Uint8Array(H * W), sy = h / H, sx = w / W;
  const x0s = new Int32Array(W), x1s = new Int32Array(W), lxs = new Float32Array(W);
  for (let x = 0; x < W; x++) {
    const src = Math.max(0, sx * (x + 0.5) - 0.5), x0 = Math.floor(src);
    x0s[x] = x0; x1s[x] = x0 < w - 1 ? x0 + 1 : x0; lxs[x] = src - x0;
  }
  for (let y = 0; y < H; y++) {
    const src = Math.max(0, sy * (y + 0.5) - 0.5), y0 = Math.floor(src), y1 = y0 < h - 1 ? y0 + 1 : y0, ly = src - y0;
    const r0 = y0 * w, r1 = y1 * w;
    for (let x = 0; x < W; x++) {
      const a = x0s[x], b = x1s[x], lx = lxs[x];
      const top = logits[r0 + a] * (1 - lx) + logits[r0 + b] * lx, bottom = logits[r1 + a] * (1 - lx) + logits[r1 + b] * lx;
      mask[y * W + x] = top * (1 - ly) + bottom * ly > 0 ? 1 : 0;
    }
  }
  return mask;
}

export class LocalDecoder {
  constructor(api) { this.api = api; this.ort = null; this.session = null; this.info = null; this.image = null; this.queue = Promise.resolve(); }

  get ready() { return Boolean(this.session && this.image); }

  /** Load onnxruntime-web and the served model's decoder (exported by the server on first use). */
  async load(model) {
    this.info = await this.api.json(`/v1/web-decoder${model ? `?model=${encodeURIComponent(model)}` : ""}`, undefined, "GET");
    if (!this.info.runtime) throw new Error("onnxruntime-web is not installed on the server (python -m masklet.web_vendor)");
    this.ort = await import(this.info.runtime);
    this.ort.env.wasm.numThreads = 1;  // no cross-origin isolation needed
    const bytes = new Uint8Array(await (await this.api.fetch(this.info.decoder)).arrayBuffer());
    this.session = await this.ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  }

  /** Download the image's embedding once (the server's encoder output) and warm the decoder up on it. */
  async setImage(iid) {
    this.image = null;
    const buffer = await (await this.api.fetch(`/v1/images/${iid}/embeddings`)).arrayBuffer();
    const { tensors, metadata } = readSafetensors(buffer), [[h, w]] = JSON.parse(metadata.orig_hw);
    const T = (t) => new this.ort.Tensor("float32", t.data, t.shape), levels = Object.keys(tensors).sort();
    const feeds = { image_embed: T(tensors[levels.at(-1)]) };
    const dummy = new this.ort.Tensor("float32", new Float32Array(1), [1, 1, 1, 1]);
    feeds.high_res_feats_0 = levels.length > 1 ? T(tensors[levels[0]]) : dummy;
    feeds.high_res_feats_1 = levels.length > 1 ? T(tensors[levels[1]]) : dummy;
    this.image = { iid, h, w, feeds };
    await this.decode([[w / 2, h / 2, 1]], null, null, true);  // the first run compiles; keep it off the first click
  }

  /** Decode one object's prompts like POST /predict: {mask (row-major H*W 0/1), rle, score, logits (low-res)}. */
  decode(points, box, maskInput, multimask) {
    const run = this.queue.then(() => this.run(points, box, maskInput, multimask));
    this.queue = run.catch(() => {});
    return run;
  }

  async run(points, box, maskInput, multimask) {
    const { h, w, feeds } = this.image, info = this.info, S = info.imageSize, side = info.lowResSide;
    const prompts = [];
    if (box) prompts.push([box[0], box[1], 2], [box[2], box[3], 3]);
    for (const p of points) prompts.push(p);
    const coords = new Float32Array(prompts.length * 2), labels = new Int32Array(prompts.length);
    prompts.forEach(([x, y, l], i) => { coords[2 * i] = (x / w) * S; coords[2 * i + 1] = (y / h) * S; labels[i] = l; });
    const inputs = {
      ...feeds,
      point_coords: new this.ort.Tensor("float32", coords, [1, prompts.length, 2]),
      point_labels: new this.ort.Tensor("int32", labels, [1, prompts.length]),
      mask_input: new this.ort.Tensor("float32", maskInput || new Float32Array(side * side), [1, 1, side, side]),
      has_mask_input: new this.ort.Tensor("float32", new Float32Array([maskInput ? 1 : 0]), [1]),
    };
    const used = Object.fromEntries(this.session.inputNames.map((n) => [n, inputs[n]]));
    const out = await this.session.run(used, ["masks", "iou_predictions"]);
    const masks = out.masks.data, ious = out.iou_predictions.data, m = ious.length, n = side * side;
    const best = () => { let k = 1; for (let i = 2; i < m; i++) if (ious[i] > ious[k]) k = i; return k; };
    let k = 0;
    if (multimask) k = best();
    else if (info.dynamicMultimask) {  // the single mask unless unstable (the decoder's select_stable)
      let inner = 0, outer = 0;
      for (let i = 0; i < n; i++) { const v = masks[i]; if (v > info.stabilityDelta) inner++; if (v > -info.stabilityDelta) outer++; }
      if ((outer > 0 ? inner / outer : 1) < info.stabilityThresh) k = best();
    }
    const logits = masks.slice(k * n, (k + 1) * n);
    const mask = upscaleMask(logits, side, side, h, w);
    for (let i = 0; i < n; i++) logits[i] = Math.min(32, Math.max(-32, logits[i]));
    return { mask, rle: encodeRle(mask, h, w), score: ious[k], logits, side };
  }
}
