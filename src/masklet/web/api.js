// HTTP calls of the page: the API key, the error envelope, busy (429/503) retries with Retry-After.

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export class Api {
  constructor(onStatus) { this.key = localStorage.getItem("masklet-key") || ""; this.onStatus = onStatus; }

  headers(extra = {}) { return this.key ? { "X-API-Key": this.key, ...extra } : extra; }

  /** fetch with the key; a 429/503 is shown and retried (at most 5 times); other errors throw ApiError. */
  async fetch(path, init = {}) {
    for (let attempt = 0; ; attempt++) {
      const resp = await fetch(path, { ...init, headers: this.headers(init.headers || {}) });
      if (resp.ok) return resp;
      let code = "http_" + resp.status, message = resp.statusText;
      try { const doc = await resp.json(); code = doc.error.code; message = doc.error.message; } catch (e) { /* not an envelope */ }
      if ((resp.status === 429 || resp.status === 503) && attempt < 5) {
        const wait = Math.min(10, Number(resp.headers.get("Retry-After")) || 1);
        this.onStatus(`server busy (${code}): retrying in ${wait} s`, "warn");
        await new Promise((r) => setTimeout(r, wait * 1000));
        continue;
      }
      throw new ApiError(resp.status, code, message);
    }
  }

  async json(path, body, method = "POST") {
    const init = { method };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers = { "Content-Type": "application/json" }; }
    return (await this.fetch(path, init)).json();
  }

  /** DELETE that survives the page unloading (keepalive fetch; sendBeacon can only POST). */
  closeOnUnload(path) {
    try { fetch(path, { method: "DELETE", keepalive: true, headers: this.headers() }); } catch (e) { /* unloading */ }
  }
}

/** Float32Array of a packed array {dtype, shape, data: base64}. */
export function unpack(packed) {
  const bin = atob(packed.data), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

/** A packed array from a Float32Array and its shape. */
export function pack(values, shape) {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return { dtype: "float32", shape, data: btoa(bin) };
}

export function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
