// The page: mode tabs, API key, status line, object list, keyboard shortcuts; the modes do the work.

import { Api } from "./api.js";
import { ImageMode } from "./image.js";
import { VideoMode } from "./video.js";

class App {
  constructor() {
    this.statusEl = document.getElementById("status");
    this.api = new Api((m, k) => this.status(m, k));
    this.recoveries = [];
    const key = document.getElementById("api-key");
    key.value = this.api.key;
    document.getElementById("key-form").addEventListener("submit", (e) => e.preventDefault());
    key.addEventListener("change", () => { this.api.key = key.value.trim(); localStorage.setItem("masklet-key", this.api.key); });
    this.image = new ImageMode(this, document.getElementById("image-mode"));
    this.video = new VideoMode(this, document.getElementById("video-mode"));
    this.mode = "image";
    for (const b of document.querySelectorAll("[data-mode]")) b.addEventListener("click", () => this.setMode(b.dataset.mode));
    document.addEventListener("keydown", (e) => {
      if (e.target.matches("input, select, textarea")) return;
      if (e.key === "?") { document.getElementById("help").toggleAttribute("open"); return; }
      (this.mode === "image" ? this.image : this.video).key(e);
    });
    this.ready();
  }

  async ready() {
    try {
      const r = await fetch("/ready"), doc = await r.json();
      document.getElementById("models").textContent = Object.entries(doc.models).map(([n, s]) => `${n}: ${s.toLowerCase()}`).join(", ");
      if (!doc.ready) setTimeout(() => this.ready(), 2000);
    } catch (e) { setTimeout(() => this.ready(), 2000); }
  }

  setMode(mode) {
    this.mode = mode;
    for (const b of document.querySelectorAll("[data-mode]")) b.classList.toggle("active", b.dataset.mode === mode);
    document.getElementById("image-mode").hidden = mode !== "image";
    document.getElementById("video-mode").hidden = mode !== "video";
    (mode === "video" ? this.video : this.image).view.fit();
    if (mode === "video") this.video.drawTimeline();
  }

  status(message, kind = "ok") {
    if (this.sticky && performance.now() < this.sticky.until) { message = `${this.sticky.text}; ${message}`; kind = "warn"; }
    this.statusEl.textContent = message;
    this.statusEl.dataset.kind = kind;
  }

  error(err) {
    const code = err.code ? ` [${err.code}]` : "";
    this.status(`error${code}: ${err.message}`, "error");
    if (!err.code) console.warn(err);
  }

  recovered(message) {
    this.recoveries.push(message);
    this.sticky = { text: `recovered: ${message}`, until: performance.now() + 5000 };
    this.status("replayed", "warn");
  }

  /** The object list: colour, editable name, hide and delete buttons; a click selects. */
  renderObjects(ul, objects, current, on) {
    ul.innerHTML = "";
    for (const o of objects) {
      const li = document.createElement("li");
      li.className = o.id === current ? "selected" : "";
      li.dataset.id = String(o.id);
      const sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = `rgb(${o.color.join(",")})`;
      const name = document.createElement("input");
      name.value = o.name; name.className = "name"; name.title = "rename";
      name.addEventListener("change", () => on.rename(o.id, name.value));
      const id = document.createElement("span"); id.className = "oid"; id.textContent = `#${o.id}`;
      const hide = document.createElement("button"); hide.textContent = o.hidden ? "show" : "hide"; hide.className = "hide";
      hide.addEventListener("click", (e) => { e.stopPropagation(); on.toggle(o.id); });
      const del = document.createElement("button"); del.textContent = "delete"; del.className = "delete";
      del.addEventListener("click", (e) => { e.stopPropagation(); on.remove(o.id); });
      li.append(sw, id, name, hide, del);
      li.addEventListener("click", () => on.select(o.id));
      ul.appendChild(li);
    }
  }
}

window.maskletApp = new App();
