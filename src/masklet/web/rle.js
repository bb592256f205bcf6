// COCO RLE in the browser: decode (string or list counts) to a column-major-aware Uint8Array, encode, area, bbox.

/** Run lengths of a COCO RLE (compressed string counts or a plain list). */
export function rleCounts(rle) {
  if (Array.isArray(rle.counts)) return rle.counts;
  const s = rle.counts, counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** A COCO RLE as a row-major (H*W) Uint8Array of 0/1. */
export function decodeRle(rle) {
  const [h, w] = rle.size, out = new Uint8Array(h * w), counts = rleCounts(rle);
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (i % 2 === 1) {
      for (let j = pos; j < pos + n; j++) {
        const col = (j / h) | 0, row = j - col * h;  // COCO runs go down the columns
        out[row * w + col] = 1;
      }
    }
    pos += n;
  }
  return out;
}

/** A row-major 0/1 mask as a compressed COCO RLE (what pycocotools writes). */
export function encodeRle(mask, h, w) {
  const counts = [];
  let prev = 0, run = 0;
  for (let col = 0; col < w; col++) {
    for (let row = 0; row < h; row++) {
      const v = mask[row * w + col] ? 1 : 0;
      if (v !== prev) { counts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  counts.push(run);
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return { size: [h, w], counts: s };
}

/** Area and [x, y, w, h] box of a row-major 0/1 mask. */
export function maskStats(mask, h, w) {
  let area = 0, x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (mask[y * w + x]) {
        area++;
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
  }
  return { area, bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0] };
}
