// Draws the console's PNG icons (an octopus-like mark on the brand blue) without any image library: pixels are
// computed here and encoded as PNG with node's zlib. Run with `npm run icons`; the PNGs are committed.
import { writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';

const BLUE = [0x0f, 0x4c, 0x81];
const WHITE = [0xff, 0xff, 0xff];

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (let n = 0; n < buf.length; n++) {
    c = (crc ^ buf[n]) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

function png(size, pixel) {
  const raw = Buffer.alloc((size * 4 + 1) * size);
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    for (let x = 0; x < size; x++) {
      const [r, g, b, a] = pixel(x / size, y / size);
      const o = y * (size * 4 + 1) + 1 + x * 4;
      raw[o] = r; raw[o + 1] = g; raw[o + 2] = b; raw[o + 3] = a;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; ihdr[9] = 6; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** The mark in unit coordinates; `inset` shrinks it for maskable icons (safe zone). */
function mark(u, v, inset) {
  const s = 1 - 2 * inset;
  const x = (u - inset) / s, y = (v - inset) / s;
  const dHead = Math.hypot(x - 0.5, y - 0.41);
  if (Math.hypot(x - 0.42, y - 0.39) < 0.04 || Math.hypot(x - 0.58, y - 0.39) < 0.04) return BLUE;
  if (dHead < 0.2) return WHITE;
  // Five tentacles: thick segments from under the head outwards.
  const legs = [[0.31, 0.56, 0.19, 0.78], [0.41, 0.59, 0.34, 0.85], [0.5, 0.6, 0.5, 0.86], [0.59, 0.59, 0.66, 0.85], [0.69, 0.56, 0.81, 0.78]];
  for (const [x1, y1, x2, y2] of legs) {
    const dx = x2 - x1, dy = y2 - y1;
    const t = Math.max(0, Math.min(1, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)));
    if (Math.hypot(x - x1 - t * dx, y - y1 - t * dy) < 0.032) return WHITE;
  }
  return BLUE;
}

function rounded(u, v, r) {
  const cx = Math.min(Math.max(u, r), 1 - r), cy = Math.min(Math.max(v, r), 1 - r);
  return Math.hypot(u - cx, v - cy) <= r;
}

for (const size of [192, 512]) {
  writeFileSync(`public/icons/icon-${size}.png`, png(size, (u, v) =>
    rounded(u, v, 0.22) ? [...mark(u, v, 0), 255] : [0, 0, 0, 0]));
}
writeFileSync('public/icons/icon-maskable-512.png', png(512, (u, v) => [...mark(u, v, 0.12), 255]));
console.log('icons written');
