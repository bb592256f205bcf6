// Video mode: a session from uploaded frames, a video file or a media-root path; prompts on any frame;
// propagation streamed onto the timeline (NDJSON), cancel, playback with overlays, export; replay on expiry.

import { download } from "./api.js";
import { decodeRle } from "./rle.js";
import { colorOf, MaskView } from "./view.js";

export class VideoMode {
  constructor(app, root) {
    this.app = app; this.api = app.api; this.root = root;
    this.sid = null; this.source = null; this.numFrames = 0; this.frame = 0; this.width = 0; this.height = 0;
    this.objects = []; this.current = null; this.nextId = 1;
    this.prompts = new Map(); this.results = new Map(); this.log = []; this.images = new Map();
    this.playing = null; this.abort = null; this.pending = Promise.resolve();
    const $ = (s) => root.querySelector(s);
    this.view = new MaskView($("#video-canvas"), (p) => this.enqueue(() => this.prompt(p)));
    this.timeline = $("#timeline");
    $("#video-files").addEventListener("change", (e) => e.target.files.length && this.enqueue(() => this.openFiles([...e.target.files])));
    $("#media-refresh").addEventListener("click", () => this.enqueue(() => this.listMedia()));
    $("#media-open").addEventListener("click", () => $("#media-list").value && this.enqueue(() => this.openSource({ kind: "path", path: $("#media-list").value })));
    $("#scrub").addEventListener("input", (e) => this.seek(Number(e.target.value)));
    $("#video-play").addEventListener("click", () => this.togglePlay());
    $("#video-new").addEventListener("click", () => this.newObject());
    for (const dir of ["forward", "backward", "both"]) $(`#prop-${dir}`).addEventListener("click", () => this.enqueue(() => this.propagate(dir)));
    $("#prop-cancel").addEventListener("click", () => this.cancel());
    $("#video-export-json").addEventListener("click", () => this.enqueue(() => this.exportResults("coco")));
    $("#video-export-davis").addEventListener("click", () => this.enqueue(() => this.exportResults("davis")));
    this.timeline.addEventListener("click", (e) => {
      const r = this.timeline.getBoundingClientRect();
      this.seek(Math.floor((e.clientX - r.left) / r.width * this.numFrames));
    });
    window.addEventListener("pagehide", () => { if (this.sid) this.api.closeOnUnload(`/v1/videos/${this.sid}`); });
  }

  enqueue(fn) { this.pending = this.pending.then(fn).catch((err) => this.app.error(err)); return this.pending; }

  async openFiles(files) {
    const video = files.find((f) => f.type.startsWith("video/") || /\.(mp4|mov|avi|mkv|webm|m4v)$/i.test(f.name));
    if (video) return this.openSource({ kind: "video", file: video });
    return this.openSource({ kind: "frames", files: files.slice().sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true })) });
  }

  async listMedia() {
    const res = await this.api.json("/v1/media", undefined, "GET");
    const sel = this.root.querySelector("#media-list");
    sel.innerHTML = "";
    for (const it of res.items) {
      const o = document.createElement("option");
      o.value = it.path; o.textContent = it.kind === "frames" ? `${it.path}/ (${it.frames} frames)` : it.path;
      sel.appendChild(o);
    }
    this.app.status(`${res.items.length} videos under the media roots`, "ok");
  }

  async createSession(source) {
    let resp;
    if (source.kind === "path") resp = await this.api.json("/v1/videos", { path: source.path });
    else {
      const form = new FormData();
      if (source.kind === "video") form.append("video", source.file, source.file.name);
      else for (const f of source.files) form.append("frames", f, f.name);
      resp = await (await this.api.fetch("/v1/videos", { method: "POST", body: form })).json();
    }
    this.sid = resp.sessionId; this.numFrames = resp.numFrames; this.width = resp.width; this.height = resp.height;
    this.images = new Map();
  }

  async openSource(source) {
    this.cancel();
    if (this.sid) this.api.closeOnUnload(`/v1/videos/${this.sid}`);
    this.app.status("opening the video...", "busy");
    await this.createSession(source);
    this.source = source; this.objects = []; this.prompts = new Map(); this.results = new Map(); this.log = []; this.nextId = 1;
    const scrub = this.root.querySelector("#scrub");
    scrub.max = String(this.numFrames - 1); scrub.disabled = false;
    this.root.querySelector("#video-hint").hidden = true;
    this.newObject();
    await this.seek(0);
    this.app.status(`video session: ${this.numFrames} frames of ${this.width}x${this.height}`, "ok");
  }

  /** A call on the session; if it expired or was lost (unknown_session), recreate it, replay the log, retry. */
  async withSession(fn) {
    try { return await fn(); } catch (err) {
      if (err.code !== "unknown_session" || !this.source) throw err;
      this.app.status("the video session expired on the server: recreating it and replaying the prompts", "warn");
      await this.createSession(this.source);
      for (const op of this.log) await this.apply(op);
      const out = await fn();
      this.app.recovered(`session recreated after ${err.code}; ${this.log.length} prompts replayed`);
      this.seek(this.frame);
      return out;
    }
  }

  async apply(op) {
    if (op.op === "points") {
      const body = { frameIdx: op.frame, objId: op.obj, clearOldPoints: true };
      if (op.points.length) { body.points = op.points.map(([x, y]) => [x, y]); body.labels = op.points.map((p) => p[2]); }
      if (op.box) body.box = op.box;
      if (!op.points.length && !op.box) return this.api.json(`/v1/videos/${this.sid}/clear`, { frameIdx: op.frame, objId: op.obj });
      return this.api.json(`/v1/videos/${this.sid}/points`, body);
    }
    if (op.op === "remove") return this.api.json(`/v1/videos/${this.sid}/objects/${op.obj}`, undefined, "DELETE");
    return null;
  }

  newObject() {
    if (!this.sid) return null;
    const cur = this.objects.find((o) => o.id === this.current);
    if (cur && ![...this.prompts.keys()].some((k) => k.endsWith(`:${cur.id}`))) return cur;
    const id = this.nextId++;
    this.objects.push({ id, name: `object ${id}`, color: colorOf(id), hidden: false });
    this.current = id;
    this.render();
    return this.objects.at(-1);
  }

  async prompt(p) {
    if (!this.sid || this.abort) return;
    if (!this.current) this.newObject();
    const key = `${this.frame}:${this.current}`, old = this.prompts.get(key) || { points: [], box: null };
    const next = { points: old.points.slice(), box: old.box };
    if (p.kind === "box") next.box = p.box; else next.points.push([p.x, p.y, p.label]);
    const op = { op: "points", frame: this.frame, obj: this.current, points: next.points, box: next.box };
    const res = await this.withSession(() => this.apply(op));
    this.log.push(op);
    this.prompts.set(key, next);
    this.store(res);
    this.render();
    await new Promise((r) => requestAnimationFrame(() => r()));
    this.app.status(`object ${this.current} on frame ${this.frame}: painted ${(performance.now() - p.t0).toFixed(0)} ms after the click`, "ok");
  }

  store(fr) {
    if (!fr) return;
    const m = new Map();
    fr.objIds.forEach((id, i) => m.set(id, { rle: fr.masks[i], mask: decodeRle(fr.masks[i]) }));
    this.results.set(fr.frameIdx, m);
  }

  async propagate(direction) {
    if (!this.sid) return;
    if (!this.prompts.size) { this.app.status("click an object first", "warn"); return; }
    const bar = this.root.querySelector("#prop-progress");
    const body = { direction, startFrameIdx: this.frame };
    this.abort = new AbortController();
    bar.hidden = false; bar.value = 0;
    this.root.querySelector("#prop-cancel").disabled = false;
    const t0 = performance.now();
    let frames = 0;
    try {
      const resp = await this.withSession(() => this.api.fetch(`/v1/videos/${this.sid}/propagate`, {
        method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal: this.abort.signal }));
      const reader = resp.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const msg = JSON.parse(line);
          if (msg.type === "frame") {
            this.store(msg); frames++;
            bar.max = msg.total; bar.value = msg.done;
            this.app.status(`propagating ${direction}: ${msg.done}/${msg.total} frames`, "busy");
            if (msg.frameIdx === this.frame) this.render(); else this.drawTimeline();
          } else if (msg.type === "error") {
            throw Object.assign(new Error(msg.error.message), { code: msg.error.code });
          }
        }
      }
      this.log.push({ op: "propagate", direction, start: body.startFrameIdx });
      this.app.status(`propagated ${direction}: ${frames} frames in ${((performance.now() - t0) / 1000).toFixed(1)} s`, "ok");
    } catch (err) {
      if (err.name === "AbortError") this.app.status(`propagation canceled after ${frames} frames`, "warn");
      else throw err;
    } finally {
      this.abort = null; bar.hidden = true;
      this.root.querySelector("#prop-cancel").disabled = true;
      this.render();
    }
  }

  cancel() { if (this.abort) this.abort.abort(); }

  async removeObject(id) {
    const op = { op: "remove", obj: id };
    if (this.sid) await this.withSession(() => this.apply(op));
    this.log.push(op);
    this.objects = this.objects.filter((o) => o.id !== id);
    for (const k of [...this.prompts.keys()]) if (k.endsWith(`:${id}`)) this.prompts.delete(k);
    for (const m of this.results.values()) m.delete(id);
    if (this.current === id) this.current = this.objects.at(-1)?.id ?? null;
    this.render();
  }

  async frameImage(idx) {
    if (!this.images.has(idx)) {
      this.images.set(idx, (async () => {
        const blob = await (await this.withSession(() => this.api.fetch(`/v1/videos/${this.sid}/frames/${idx}`))).blob();
        const img = new Image(); img.src = URL.createObjectURL(blob); await img.decode(); return img;
      })());
    }
    return this.images.get(idx);
  }

  async seek(idx) {
    if (!this.sid) return;
    idx = Math.max(0, Math.min(this.numFrames - 1, idx));
    this.frame = idx;
    this.root.querySelector("#scrub").value = String(idx);
    this.root.querySelector("#frame-label").textContent = `frame ${idx + 1} / ${this.numFrames}`;
    const img = await this.frameImage(idx);
    if (this.frame !== idx) return;
    if (this.view.image !== img) this.view.setImage(img);
    this.render();
    if (idx + 1 < this.numFrames) this.frameImage(idx + 1);
  }

  togglePlay() {
    const btn = this.root.querySelector("#video-play");
    if (this.playing) { clearInterval(this.playing); this.playing = null; btn.textContent = "Play"; return; }
    if (!this.sid) return;
    btn.textContent = "Pause";
    this.playing = setInterval(() => this.seek(this.frame + 1 >= this.numFrames ? 0 : this.frame + 1), 100);
  }

  render() {
    const res = this.results.get(this.frame) || new Map(), hidden = new Set(this.objects.filter((o) => o.hidden).map((o) => o.id));
    const layers = [...res].filter(([id]) => !hidden.has(id) && this.objects.some((o) => o.id === id))
      .map(([id, r]) => ({ mask: r.mask, color: colorOf(id), alpha: id === this.current ? 140 : 100 }));
    const marks = [...this.prompts].filter(([k]) => Number(k.split(":")[0]) === this.frame && !hidden.has(Number(k.split(":")[1])))
      .map(([k, v]) => ({ ...v, selected: Number(k.split(":")[1]) === this.current }));
    this.view.setOverlays(layers, marks);
    this.app.renderObjects(this.root.querySelector("#video-objects"), this.objects, this.current, {
      select: (id) => { this.current = id; this.render(); }, remove: (id) => this.enqueue(() => this.removeObject(id)),
      toggle: (id) => { const o = this.objects.find((x) => x.id === id); o.hidden = !o.hidden; this.render(); },
      rename: (id, n) => { this.objects.find((x) => x.id === id).name = n; this.render(); },
    });
    this.drawTimeline();
  }

  drawTimeline() {
    const c = this.timeline, g = c.getContext("2d"), w = (c.width = c.clientWidth || 800), h = (c.height = 28), n = this.numFrames || 1;
    g.fillStyle = "#1f2937"; g.fillRect(0, 0, w, h);
    for (const [idx, m] of this.results) {
      if (!m.size || ![...m.values()].some((r) => r.rle && r.rle.counts !== undefined)) continue;
      g.fillStyle = "#10b981"; g.fillRect(idx / n * w, 8, Math.max(1, w / n - 1), h - 8);
    }
    for (const k of this.prompts.keys()) { const idx = Number(k.split(":")[0]); g.fillStyle = "#facc15"; g.fillRect(idx / n * w, 0, Math.max(2, w / n - 1), 6); }
    g.fillStyle = "#fff"; g.fillRect((this.frame + 0.5) / n * w - 1, 0, 2, h);
  }

  async exportResults(format) {
    if (!this.sid) return;
    const resp = await this.withSession(() => this.api.fetch(`/v1/videos/${this.sid}/results?format=${format}`));
    download(format === "coco" ? "video_masks.json" : "davis_masks.zip", await resp.blob());
    this.app.status(`exported ${format === "coco" ? "COCO RLE JSON" : "DAVIS PNG zip"}`, "ok");
  }

  key(e) {
    const k = e.key.toLowerCase();
    if (k === " ") { e.preventDefault(); this.togglePlay(); }
    else if (k === "arrowright") this.seek(this.frame + (e.shiftKey ? 10 : 1));
    else if (k === "arrowleft") this.seek(this.frame - (e.shiftKey ? 10 : 1));
    else if (k === "n") this.newObject();
    else if (k === "p") this.enqueue(() => this.propagate("both"));
    else if (k === "f") this.enqueue(() => this.propagate("forward"));
    else if (k === "b") this.enqueue(() => this.propagate("backward"));
    else if (k === "escape") this.cancel();
    else if ((k === "delete" || k === "backspace") && this.current) this.enqueue(() => this.removeObject(this.current));
  }
}
