/**
 * Text chunks in PNG files (PNG spec 11.3.4): `tEXt` for Latin-1 text, `iTXt` (UTF-8) for any
 * other text, inserted right after IHDR so that readers which stop early still see them. pngjs
 * writes neither, so they are spliced into its output here.
 */

import { crc32, inflateSync } from "node:zlib";

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** One chunk: 4-byte length, 4-byte type, data, CRC-32 of type and data. */
function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function isLatin1(text: string): boolean {
  return /^[\u0000-\u00ff]*$/.test(text);
}

/** A text chunk for one entry: tEXt when the text is Latin-1 (and has no NUL), else iTXt. */
function textChunk(keyword: string, text: string): Buffer {
  const printable = /^[\u0020-\u007e\u00a1-\u00ff]{1,79}$/.test(keyword);
  if (!printable || keyword.startsWith(" ") || keyword.endsWith(" ") || keyword.includes("  ")) {
    throw new RangeError(`Expected 1-79 printable Latin-1 characters without leading, trailing or double spaces for a PNG text keyword but received ${JSON.stringify(keyword)}`);
  }
  if (isLatin1(text) && !text.includes("\u0000")) {
    return chunk("tEXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")]));
  }
  // keyword \0, compression flag 0, method 0, empty language tag \0, empty translated keyword \0, UTF-8 text.
  const header = Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0, 0, 0, 0, 0])]);
  return chunk("iTXt", Buffer.concat([header, Buffer.from(text, "utf8")]));
}

/** `png` with one text chunk per entry, inserted after IHDR (a Buffer, typed as the Uint8Array it is). */
export function withTextChunks(png: Uint8Array, entries: Readonly<Record<string, string>>): Uint8Array {
  const buffer = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (!buffer.subarray(0, 8).equals(SIGNATURE) || buffer.toString("latin1", 12, 16) !== "IHDR") {
    throw new RangeError("not a PNG file (no signature and IHDR chunk)");
  }
  const ihdrEnd = 8 + 12 + buffer.readUInt32BE(8);
  const chunks = Object.entries(entries).map(([keyword, text]) => textChunk(keyword, text));
  return Buffer.concat([buffer.subarray(0, ihdrEnd), ...chunks, buffer.subarray(ihdrEnd)]);
}

/** Every tEXt, zTXt and iTXt entry of a PNG file, keyword to text (a later duplicate wins). */
export function readTextChunks(png: Uint8Array): Record<string, string> {
  const buffer = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (!buffer.subarray(0, 8).equals(SIGNATURE)) throw new RangeError("not a PNG file (no signature)");
  const entries: Record<string, string> = {};
  for (let at = 8; at + 12 <= buffer.length; ) {
    const length = buffer.readUInt32BE(at);
    const type = buffer.toString("latin1", at + 4, at + 8);
    const data = buffer.subarray(at + 8, at + 8 + length);
    if (data.length !== length) throw new RangeError(`PNG chunk ${type} at byte ${at} is cut short`);
    if (buffer.readUInt32BE(at + 8 + length) !== crc32(buffer.subarray(at + 4, at + 8 + length))) {
      throw new RangeError(`PNG chunk ${type} at byte ${at} has a bad CRC`);
    }
    const nul = data.indexOf(0);
    const keyword = data.toString("latin1", 0, nul);
    if (type === "tEXt") entries[keyword] = data.toString("latin1", nul + 1);
    if (type === "zTXt") entries[keyword] = inflateSync(data.subarray(nul + 2)).toString("latin1");
    if (type === "iTXt") {
      const compressed = data[nul + 1] === 1;
      const languageEnd = data.indexOf(0, nul + 3);
      const translatedEnd = data.indexOf(0, languageEnd + 1);
      const text = data.subarray(translatedEnd + 1);
      entries[keyword] = (compressed ? inflateSync(text) : text).toString("utf8");
    }
    if (type === "IEND") break;
    at += 12 + length;
  }
  return entries;
}
