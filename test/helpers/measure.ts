// What a generated image of the shapes model (test/fixtures/shapes-sd) shows, measured with simple pixel
// statistics: the background's colour (median of a 2-pixel border), the shape (pixels that differ from it by more
// than 60 in some channel), the shape's colour (median of those pixels), its centre and its extent. Each is
// named by the nearest entry of the model's dataset.json. scripts/sample_demo_model.py's measure() is the same
// measurement in Python (keep the two in step).

import { readFileSync } from "node:fs";
import { join } from "node:path";

export interface ShapesVocabulary {
  size: number;
  colours: Record<string, [number, number, number]>;
  shapes: string[];
  positions: Record<string, [number, number]>;
  sizes: Record<string, [number, number]>;
  size_split: number;
}

/** The attributes of one caption (every one named, as in a full caption). */
export interface Attributes {
  size: string;
  colour: string;
  shape: string;
  background: string;
  position: string;
}

/** What an image shows; null where no shape was found. */
export interface Measured {
  background: string;
  colour: string | null;
  position: string | null;
  size: string | null;
}

const BORDER = 2;
const SHAPE_THRESHOLD = 60;

export function readVocabulary(modelDir: string): ShapesVocabulary {
  return JSON.parse(readFileSync(join(modelDir, "dataset.json"), "utf8")) as ShapesVocabulary;
}

/** The caption the model was trained with, as scripts/shapes_dataset.py's caption(). */
export function caption(a: Partial<Attributes> & { shape: string }): string {
  const article = (word: string) => ("aeiou".includes(word[0]!) ? "an" : "a");
  const words = [a.size, a.colour, a.shape].filter((w): w is string => !!w);
  let text = `${article(words[0]!)} ${words.join(" ")}`;
  if (a.background) text += ` on ${article(a.background)} ${a.background} background`;
  if (a.position) text += `, ${a.position}`;
  return text;
}

function median(values: number[]): number {
  const s = values.slice().sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function nearest<T extends readonly number[]>(table: Record<string, T>, value: readonly number[]): string {
  let best = "";
  let bestD = Infinity;
  for (const [name, ref] of Object.entries(table)) {
    const d = ref.reduce((sum, r, i) => sum + (r - value[i]!) ** 2, 0);
    if (d < bestD) [best, bestD] = [name, d];
  }
  return best;
}

/** Measure an RGB image (width x height x 3 bytes) against the model's vocabulary. */
export function measure(rgb: Uint8Array, width: number, height: number, vocab: ShapesVocabulary): Measured {
  const edge: number[][] = [[], [], []];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (x >= BORDER && x < width - BORDER && y >= BORDER && y < height - BORDER) continue;
      for (let c = 0; c < 3; c++) edge[c]!.push(rgb[(y * width + x) * 3 + c]!);
    }
  }
  const bg = edge.map(median);
  const inside: number[][] = [[], [], []];
  const colCount = new Array<number>(width).fill(0);
  const rowCount = new Array<number>(height).fill(0);
  let sx = 0;
  let sy = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      if (Math.max(...[0, 1, 2].map((c) => Math.abs(rgb[i + c]! - bg[c]!))) <= SHAPE_THRESHOLD) continue;
      for (let c = 0; c < 3; c++) inside[c]!.push(rgb[i + c]!);
      colCount[x]!++;
      rowCount[y]!++;
      sx += x + 0.5;
      sy += y + 0.5;
    }
  }
  const out: Measured = { background: nearest(vocab.colours, bg), colour: null, position: null, size: null };
  const n = inside[0]!.length;
  if (n < 8) return out;
  out.colour = nearest(vocab.colours, inside.map(median));
  out.position = nearest(vocab.positions, [sx / n / width, sy / n / height]);
  const span = (counts: number[]) => {
    const idx = counts.flatMap((c, i) => (c >= 2 ? [i] : []));
    return idx.length ? idx[idx.length - 1]! - idx[0]! + 1 : 0;
  };
  const extent = Math.max(span(colCount) / width, span(rowCount) / height);
  out.size = extent < vocab.size_split ? "small" : "large";
  return out;
}
