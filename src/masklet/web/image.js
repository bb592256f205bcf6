// Image mode: one uploaded image, objects prompted by clicks and boxes, refinement, undo, automatic masks, export.

import { download, pack, unpack } from "./api.js";
import { LocalDecoder } from "./local.js";
import { decodeRle, maskStats } from "./rle.js";
import { colorOf, MaskView } from "./view.js";

export class ImageMode {
  constructor(app, root) {
    this.app = app; this.api = app.api; this.root = root;
    this.file = null; this.iid = null; this.width = 0; this.height = 0;
    this.objects = []; this.current = null; this.nextId = 1;
    this.undoStack = []; this.redoStack = []; this.latencies = []; this.auto = null; this.pending = Promise.resolve();
    this.view = new MaskView(root.querySelector("#image-canvas"), (p) => this.enqueue(() => this.prompt(p)), (p) => this.hover(p));
    this.local = new LocalDecoder(this.api); this.localOn = false; this.preview = null; this.hoverAt = null; this.hovering = false;
    const $ = (s) => root.querySelector(s);
    $("#image-local").addEventListener("change", (e) => this.enqueue(() => this.setLocal(e.target.checked)));
    $("#image-file").addEventListener("change", (e) => e.target.files[0] && this.open(e.target.files[0]));
    $("#image-new").addEventListener("click", () => this.newObject());
    $("#image-undo").addEventListener("click", () => this.undo());
    $("#image-redo").addEventListener("click", () => this.redo());
    $("#image-auto").addEventListener("click", () => this.enqueue(() => this.automatic()));
    $("#auto-pick-all").addEventListener("click", () => this.pickAll());
    $("#auto-done").addEventListener("click", () => this.endAuto());
    $("#image-export-json").addEventListener("click", () => this.exportJson());
    $("#image-export-png").addEventListener("click", () => this.exportPng());
    const stage = $("#image-stage");
    stage.addEventListener("dragover", (e) => e.preventDefault());
    stage.addEventListener("drop", (e) => { e.preventDefault(); const f = e.dataTransfer.files[0]; if (f) this.open(f); });
  }

  /** Run UI actions one after another (a fast second click waits for the first answer). */
  enqueue(fn) {
    this.pending = this.pending.then(fn).catch((err) => this.app.error(err));
    return this.pending;
  }

  async open(file) {
    this.file = file;
    const img = new Image();
    img.src = URL.createObjectURL(file);
    await img.decode();
    this.objects = []; this.undoStack = []; this.redoStack = []; this.nextId = 1; this.auto = null;
    this.view.setImage(img);
    this.root.querySelector("#image-hint").hidden = true;
    await this.upload();
    this.newObject();
    this.app.status(`image ${this.width}x${this.height} encoded (${this.iid.slice(0, 8)})`, "ok");
  }

  async upload() {
    this.app.status("uploading and encoding the image...", "busy");
    await this.uploadFile();
  }

  snapshot() { return { objects: this.objects.map((o) => ({ ...o, points: o.points.slice() })), current: this.current, nextId: this.nextId }; }

  restore(s) { this.objects = s.objects.map((o) => ({ ...o, points: o.points.slice() })); this.current = s.current; this.nextId = s.nextId; this.render(); }

  commit() { this.undoStack.push(this.snapshot()); this.redoStack = []; if (this.undoStack.length > 200) this.undoStack.shift(); }

  undo() { if (this.undoStack.length) { this.redoStack.push(this.snapshot()); this.restore(this.undoStack.pop()); this.app.status("undone", "ok"); } }

  redo() { if (this.redoStack.length) { this.undoStack.push(this.snapshot()); this.restore(this.redoStack.pop()); this.app.status("redone", "ok"); } }

  newObject(fields = {}) {
    if (!this.iid) return null;
    const cur = this.obj();
    if (cur && !cur.rle && !cur.points.length && !cur.box && !Object.keys(fields).length) return cur;  // reuse an empty one
    this.commit();
    const id = this.nextId++;
    const o = { id, name: `object ${id}`, color: colorOf(id), hidden: false, points: [], box: null, rle: null, mask: null, logits: null, score: null, ...fields };
    this.objects.push(o);
    this.current = id;
    this.render();
    return o;
  }

  obj(id = this.current) { return this.objects.find((o) => o.id === id) || null; }

  /** Turn in-browser decoding on (load onnxruntime-web, the decoder and this image's embedding) or off. */
  async setLocal(on) {
    this.localOn = false; this.preview = null;
    if (on) {
      this.app.status("loading the in-browser decoder (onnxruntime-web)...", "busy");
      try {
        if (!this.local.session) await this.local.load();
        if (this.iid) await this.local.setImage(this.iid);
      } catch (err) { this.root.querySelector("#image-local").checked = false; throw err; }
      this.localOn = true;
      this.app.status("in-browser decoding on: clicks are decoded in this page", "ok");
    } else this.app.status("in-browser decoding off: clicks are decoded by the server", "ok");
    this.render();
  }

  get decodingLocally() { return this.localOn && this.local.ready && this.local.image.iid === this.iid; }

  /** With in-browser decoding on, the mask a positive click at the pointer would give follows the mouse. */
  async hover(p) {
    this.hoverAt = p;
    if (!p) { if (this.preview) { this.preview = null; this.render(); } return; }
    if (this.hovering || !this.decodingLocally || this.auto) return;
    this.hovering = true;
    try {
      while (this.hoverAt) {
        const [x, y] = this.hoverAt, o = this.obj();
        this.hoverAt = null;
        const points = [...(o?.points || []), [x, y, 1]];
        const res = await this.local.decode(points, o?.box, o?.logits ? unpack(o.logits) : null, points.length === 1 && !o?.box);
        if (this.decodingLocally) { this.preview = res.mask; this.render(); }
      }
    } finally { this.hovering = false; }
  }

  async prompt(p) {
    if (!this.iid) return;
    this.preview = null;
    if (this.auto) { this.pickAt(p.x ?? p.box[0], p.y ?? p.box[1]); return; }
    let o = this.obj() || this.newObject();
    this.commit();
    o = { ...o, points: o.points.slice() };
    if (p.kind === "box") o.box = p.box.map((v) => Math.round(v * 100) / 100);
    else o.points.push([p.x, p.y, p.label]);
    await this.predict(o, p.t0);
  }

  /** Ask the server for o's mask from its prompts and its previous low-res logits (refinement). */
  async predict(o, t0 = performance.now()) {
    if (this.decodingLocally) { await this.predictLocally(o, t0); return; }
    const body = { multimaskOutput: o.points.length === 1 && !o.box && !o.logits, lowResLogits: true };
    if (o.points.length) { body.pointCoords = o.points.map(([x, y]) => [x, y]); body.pointLabels = o.points.map((q) => q[2]); }
    if (o.box) body.box = o.box;
    if (o.logits) body.maskInput = o.logits;
    const res = await this.withImage(() => this.api.json(`/v1/images/${this.iid}/predict`, body));
    let best = 0;
    res.scores.forEach((s, i) => { if (s > res.scores[best]) best = i; });
    const low = res.lowResLogits, [, lh, lw] = low.shape, all = unpack(low);
    o.logits = pack(all.slice(best * lh * lw, (best + 1) * lh * lw), [1, lh, lw]);
    o.rle = res.masks[best]; o.mask = decodeRle(o.rle); o.score = res.scores[best];
    this.objects = this.objects.map((x) => (x.id === o.id ? o : x));
    this.render();
    await new Promise((r) => requestAnimationFrame(() => r()));  // painted
    const ms = performance.now() - t0;
    this.latencies.push(ms);
    this.app.status(`object ${o.id}: score ${o.score.toFixed(3)}, painted ${ms.toFixed(0)} ms after the click`, "ok");
  }

  /** predict() with the decoder in this page: the same mask choice and upscaling, no request. */
  async predictLocally(o, t0) {
    const multimask = o.points.length === 1 && !o.box && !o.logits;
    const res = await this.local.decode(o.points, o.box, o.logits ? unpack(o.logits) : null, multimask);
    o.logits = pack(res.logits, [1, res.side, res.side]);
    o.rle = res.rle; o.mask = res.mask; o.score = res.score;
    this.objects = this.objects.map((x) => (x.id === o.id ? o : x));
    this.preview = null;
    this.render();
    await new Promise((r) => requestAnimationFrame(() => r()));  // painted
    const ms = performance.now() - t0;
    this.latencies.push(ms);
    this.app.status(`object ${o.id}: score ${o.score.toFixed(3)}, decoded in the browser, painted ${ms.toFixed(0)} ms after the click`, "ok");
  }

  /** Run a call on the cached image; if the server forgot it (unknown_image), upload again and retry once. */
  async withImage(fn) {
    try { return await fn(); } catch (err) {
      if (err.code !== "unknown_image") throw err;
      this.app.status("the server forgot the image (unknown_image): uploading it again and replaying", "warn");
      await this.uploadFile();
      const out = await fn();
      this.app.recovered(`image re-uploaded after ${err.code}; prompts replayed`);
      return out;
    }
  }

  async uploadFile() {
    const resp = await this.api.fetch("/v1/images", { method: "POST", body: this.file, headers: { "Content-Type": "application/octet-stream" } });
    const info = await resp.json();
    this.iid = info.image_id ?? info.imageId; this.width = info.width; this.height = info.height;
    if (this.localOn) await this.local.setImage(this.iid);  // the embedding, downloaded once per image
  }

  async automatic() {
    if (!this.iid) return;
    const $ = (s) => this.root.querySelector(s), opts = {
      pointsPerSide: Number($("#auto-pps").value), predIouThresh: Number($("#auto-iou").value),
      stabilityScoreThresh: Number($("#auto-stab").value), minMaskRegionArea: Number($("#auto-minarea").value),
    };
    const bar = $("#auto-progress"), label = $("#auto-elapsed"), t0 = performance.now();
    bar.hidden = false; bar.removeAttribute("value");
    const timer = setInterval(() => { label.textContent = `${((performance.now() - t0) / 1000).toFixed(1)} s`; }, 100);
    this.app.status("segmenting everything...", "busy");
    try {
      const res = await this.withImage(() => this.api.json(`/v1/images/${this.iid}/automatic`, opts));
      this.auto = res.records.map((r, i) => ({ ...r, mask: decodeRle(r.segmentation), color: colorOf(i + 1), picked: false }));
      this.root.querySelector("#auto-bar").hidden = false;
      this.app.status(`${this.auto.length} automatic masks in ${((performance.now() - t0) / 1000).toFixed(1)} s: click one to make it an object`, "ok");
    } finally {
      clearInterval(timer); bar.hidden = true; label.textContent = "";
    }
    this.render();
  }

  pickAt(x, y) {
    const i = Math.floor(y) * this.width + Math.floor(x);
    const hits = this.auto.filter((r) => !r.picked && r.mask[i]).sort((a, b) => a.area - b.area);
    if (hits.length) this.pick(hits[0]);
  }

  pick(r) {
    r.picked = true;
    this.newObject({ rle: r.segmentation, mask: r.mask, score: r.predicted_iou });
    this.app.status(`automatic mask picked as object ${this.current}`, "ok");
  }

  pickAll() { for (const r of this.auto || []) if (!r.picked) this.pick(r); this.endAuto(); }

  endAuto() { this.auto = null; this.root.querySelector("#auto-bar").hidden = true; this.render(); }

  remove(id) { this.commit(); this.objects = this.objects.filter((o) => o.id !== id); if (this.current === id) this.current = this.objects.at(-1)?.id ?? null; this.render(); }

  toggle(id) { this.commit(); const o = this.obj(id); o.hidden = !o.hidden; this.objects = this.objects.map((x) => (x.id === id ? { ...o } : x)); this.render(); }

  rename(id, name) { this.commit(); this.objects = this.objects.map((x) => (x.id === id ? { ...x, name } : x)); this.render(); }

  render() {
    const layers = this.auto
      ? this.auto.filter((r) => !r.picked).map((r) => ({ mask: r.mask, color: r.color, alpha: 110 }))
      : this.objects.filter((o) => o.mask && !o.hidden).map((o) => ({ mask: o.mask, color: o.color, alpha: o.id === this.current ? 140 : 100 }));
    if (this.preview && !this.auto) layers.push({ mask: this.preview, color: this.obj()?.color || [255, 255, 255], alpha: 70 });
    const marks = this.auto ? [] : this.objects.filter((o) => !o.hidden).map((o) => ({ points: o.points, box: o.box, selected: o.id === this.current }));
    this.view.setOverlays(layers, marks);
    this.app.renderObjects(this.root.querySelector("#image-objects"), this.objects, this.current, {
      select: (id) => { this.current = id; this.render(); }, remove: (id) => this.remove(id),
      toggle: (id) => this.toggle(id), rename: (id, n) => this.rename(id, n),
    });
    this.root.querySelector("#image-undo").disabled = !this.undoStack.length;
    this.root.querySelector("#image-redo").disabled = !this.redoStack.length;
  }

  /** COCO JSON of the objects: one image, one annotation per object (compressed RLE). */
  cocoJson() {
    const anns = this.objects.filter((o) => o.rle).map((o, k) => {
      const { area, bbox } = maskStats(o.mask, this.height, this.width);
      return { id: k + 1, image_id: 1, category_id: 1, segmentation: o.rle, area, bbox, iscrowd: 0,
        score: o.score, attributes: { obj_id: o.id, name: o.name, points: o.points, box: o.box } };
    });
    return { info: { description: "masklet web page export" }, images: [{ id: 1, file_name: this.file?.name || "image", width: this.width, height: this.height }],
      annotations: anns, categories: [{ id: 1, name: "object" }] };
  }

  exportJson() {
    if (!this.iid) return;
    download("masks.json", new Blob([JSON.stringify(this.cocoJson())], { type: "application/json" }));
  }

  /** A PNG whose grey level is the object id (0 = background; later objects on top). */
  exportPng() {
    if (!this.iid) return;
    const c = document.createElement("canvas"); c.width = this.width; c.height = this.height;
    const g = c.getContext("2d"), img = g.createImageData(this.width, this.height);
    for (let i = 0; i < img.data.length; i += 4) img.data[i + 3] = 255;
    for (const o of this.objects) {
      if (!o.mask) continue;
      for (let i = 0; i < o.mask.length; i++) if (o.mask[i]) { img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = o.id; }
    }
    g.putImageData(img, 0, 0);
    c.toBlob((b) => download("masks.png", b), "image/png");
  }

  key(e) {
    const k = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); e.shiftKey ? this.redo() : this.undo(); }
    else if ((e.ctrlKey || e.metaKey) && k === "y") { e.preventDefault(); this.redo(); }
    else if (k === "n") this.newObject();
    else if (k === "a") this.enqueue(() => this.automatic());
    else if (k === "h" && this.current) this.toggle(this.current);
    else if ((k === "delete" || k === "backspace") && this.current) this.remove(this.current);
    else if (k === "e") this.exportJson();
    else if (k === "escape" && this.auto) this.endAuto();
  }
}
