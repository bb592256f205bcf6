// A canvas showing an image with coloured masks, points and boxes; turns clicks and drags into prompts.

export const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 190], [0, 128, 128], [170, 110, 40], [128, 0, 0]];

export function colorOf(id) { return COLORS[(id - 1) % COLORS.length]; }

export class MaskView {
  /** canvas: the element; onPrompt({kind: "point"|"box", x, y, label, box, t0}) on user input;
   *  onHover([x, y] | null) while the pointer moves over the image with no button down (optional). */
  constructor(canvas, onPrompt, onHover = null) {
    this.canvas = canvas; this.ctx = canvas.getContext("2d"); this.onPrompt = onPrompt; this.onHover = onHover;
    canvas.addEventListener("pointerleave", () => this.onHover?.(null));
    this.image = null; this.layers = []; this.marks = []; this.drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    window.addEventListener("resize", () => this.fit());
  }

  /** Scale the canvas (CSS size only) to fill its stage, keeping the aspect ratio. */
  fit() {
    const stage = this.canvas.parentElement, w = this.canvas.width, h = this.canvas.height;
    if (!stage || !w || !stage.clientWidth) return;
    const s = Math.min(stage.clientWidth / w, stage.clientHeight / h);
    this.canvas.style.width = `${Math.floor(w * s)}px`; this.canvas.style.height = `${Math.floor(h * s)}px`;
  }

  setImage(image) {
    this.image = image;
    this.canvas.width = image.naturalWidth || image.width;
    this.canvas.height = image.naturalHeight || image.height;
    this.fit();
    this.draw();
  }

  /** Image pixel coordinates (floats) of a pointer event. */
  toImage(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * this.canvas.width / r.width, (e.clientY - r.top) * this.canvas.height / r.height];
  }

  down(e) {
    if (!this.image) return;
    this.onHover?.(null);  // a click replaces the hover preview (and stops its decoding)
    this.canvas.setPointerCapture?.(e.pointerId);
    this.drag = { t0: performance.now(), start: this.toImage(e), end: null, label: (e.button === 2 || e.shiftKey) ? 0 : 1 };
  }

  move(e) {
    if (!this.drag) { if (this.image && this.onHover) this.onHover(this.toImage(e)); return; }
    const p = this.toImage(e), [sx, sy] = this.drag.start;
    if (this.drag.end || Math.hypot(p[0] - sx, p[1] - sy) > 4 * this.canvas.width / this.canvas.getBoundingClientRect().width) {
      this.drag.end = p;
      this.draw();
    }
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.end) {
      const [x0, y0] = d.start, [x1, y1] = this.toImage(e);
      this.onPrompt({ kind: "box", box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)], t0: d.t0 });
    } else {
      this.onPrompt({ kind: "point", x: d.start[0], y: d.start[1], label: d.label, t0: d.t0 });
    }
  }

  /** layers: [{id, mask (Uint8Array H*W), color, selected}]; marks: [{points: [[x, y, l]], box}]. */
  setOverlays(layers, marks) { this.layers = layers; this.marks = marks; this.draw(); }

  /** A cached RGBA canvas of one mask layer (rebuilt when the mask array changes). */
  layerCanvas(layer) {
    if (layer._canvas && layer._canvas.src === layer.mask && layer._canvas.alpha === layer.alpha) return layer._canvas;
    const w = this.canvas.width, h = this.canvas.height, c = document.createElement("canvas");
    c.width = w; c.height = h;
    const g = c.getContext("2d"), img = g.createImageData(w, h), [r, gr, b] = layer.color, a = layer.alpha ?? 120;
    for (let i = 0; i < w * h; i++) {
      if (layer.mask[i]) { const j = 4 * i; img.data[j] = r; img.data[j + 1] = gr; img.data[j + 2] = b; img.data[j + 3] = a; }
    }
    g.putImageData(img, 0, 0);
    c.src = layer.mask; c.alpha = layer.alpha;
    layer._canvas = c;
    return c;
  }

  draw() {
    const g = this.ctx, w = this.canvas.width, h = this.canvas.height;
    g.clearRect(0, 0, w, h);
    if (!this.image) return;
    g.drawImage(this.image, 0, 0, w, h);
    for (const layer of this.layers) if (layer.mask && layer.mask.length === w * h) g.drawImage(this.layerCanvas(layer), 0, 0);
    const s = w / (this.canvas.getBoundingClientRect().width || w);
    for (const m of this.marks) {
      if (m.box) {
        g.strokeStyle = m.selected ? "#fff" : "#ddd"; g.lineWidth = 2 * s; g.setLineDash([6 * s, 4 * s]);
        const [x0, y0, x1, y1] = m.box; g.strokeRect(x0, y0, x1 - x0, y1 - y0); g.setLineDash([]);
      }
      for (const [x, y, l] of m.points || []) {
        g.beginPath(); g.arc(x, y, 5 * s, 0, 2 * Math.PI);
        g.fillStyle = l ? "#22c55e" : "#ef4444"; g.fill(); g.lineWidth = 1.5 * s; g.strokeStyle = "#fff"; g.stroke();
      }
    }
    if (this.drag && this.drag.end) {
      const [x0, y0] = this.drag.start, [x1, y1] = this.drag.end;
      g.strokeStyle = "#fde047"; g.lineWidth = 2 * s; g.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
  }
}
