// PNG text chunks (src/png-text.ts): written after IHDR, read back, readable by pngjs, and checked
// by CRC; tEXt for Latin-1 text and iTXt (UTF-8) for the rest, as the PNG spec (11.3.4) says.

import { crc32, deflateSync } from "node:zlib";

import test from "ava";
import pngjs from "pngjs";

import { GeneratedImage } from "../src/image.js";
import { readTextChunks, withTextChunks } from "../src/png-text.js";

const image = new GeneratedImage(4, 2, Uint8Array.from({ length: 24 }, (_, i) => i * 10), 7n);

test("text chunks round-trip, Latin-1 as tEXt and other text as iTXt, and the pixels stay readable", (t) => {
  const text = { prompt: "a café at night", negativePrompt: "", seed: "18446744073709551615", emoji: "猫 on a 🚲", multi: "line one\nline two" };
  const png = Buffer.from(image.toPng({ text }));
  t.deepEqual(readTextChunks(png), text);
  const types: string[] = [];
  for (let at = 8; at < png.length; at += 12 + png.readUInt32BE(at)) types.push(png.toString("latin1", at + 4, at + 8));
  t.deepEqual(types.slice(0, 6), ["IHDR", "tEXt", "tEXt", "tEXt", "iTXt", "tEXt"]);
  t.is(types.at(-1), "IEND");
  const decoded = pngjs.PNG.sync.read(png);
  t.is(decoded.width, 4);
  t.deepEqual([...decoded.data.subarray(0, 4)], [0, 10, 20, 255]);
  t.deepEqual(readTextChunks(image.toPng()), {});
});

test("compressed iTXt and zTXt written by other tools are read too", (t) => {
  const base = image.toPng();
  // The chunks built by hand, as another encoder writes them, after IHDR (which ends at byte 33).
  const make = (type: string, data: Buffer) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ztxt = make("zTXt", Buffer.concat([Buffer.from("Comment\0\0", "latin1"), deflateSync(Buffer.from("squeezed", "latin1"))]));
  const itxt = make("iTXt", Buffer.concat([Buffer.from("Title\0\x01\0en\0Titel\0", "latin1"), deflateSync(Buffer.from("ünïcode", "utf8"))]));
  const png = Buffer.concat([base.subarray(0, 33), ztxt, itxt, base.subarray(33)]);
  t.deepEqual(readTextChunks(png), { Comment: "squeezed", Title: "ünïcode" });
});

test("a damaged chunk and a bad keyword are errors", (t) => {
  const png = image.toPng({ text: { prompt: "apple" } });
  png[44] = png[44]! ^ 0xff; // a byte of the keyword "prompt"
  t.throws(() => readTextChunks(png), { message: /^PNG chunk tEXt at byte 33 has a bad CRC$/ });
  t.throws(() => image.toPng({ text: { " lead": "x" } }), { instanceOf: RangeError, message: /PNG text keyword but received " lead"/ });
  t.throws(() => image.toPng({ text: { ["k".repeat(80)]: "x" } }), { instanceOf: RangeError });
  t.throws(() => withTextChunks(Buffer.from("not a png"), { a: "b" }), { message: "not a PNG file (no signature and IHDR chunk)" });
});
