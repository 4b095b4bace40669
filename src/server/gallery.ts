/**
 * The images the server made since it started, for the page at `/`: the newest `keep` of them
 * (PNGs with their text chunks, as sent), listed by `GET /gallery` with their parameters and
 * served one by one by `GET /gallery/<id>.png`. Older ones are dropped, so memory stays bounded.
 */

/** One image in the gallery, as `GET /gallery` lists it. */
export interface GalleryEntry {
  id: number;
  /** Where its PNG is: "/gallery/<id>.png". */
  url: string;
  /** The web UIs' infotext: prompt, "Negative prompt: ...", "Steps: ..., Seed: ..., Size: ...". */
  parameters: string;
  prompt: string;
  /** As a string: seeds go up to 2^64 - 1. */
  seed: string;
  width: number;
  height: number;
  /** When it was made (ISO 8601). */
  created: string;
}

export class Gallery {
  readonly #entries: { entry: GalleryEntry; png: Buffer }[] = [];
  #next = 1;

  constructor(readonly keep: number) {}

  add(png: Buffer, image: { width: number; height: number; seed: bigint }, prompt: string, parameters: string): void {
    if (this.keep === 0) return;
    const id = this.#next++;
    const entry = {
      id, url: `/gallery/${id}.png`, parameters, prompt, seed: image.seed.toString(),
      width: image.width, height: image.height, created: new Date().toISOString(),
    };
    this.#entries.push({ entry, png });
    if (this.#entries.length > this.keep) this.#entries.shift();
  }

  /** Newest first. */
  list(): { keep: number; images: GalleryEntry[] } {
    return { keep: this.keep, images: this.#entries.map((e) => e.entry).reverse() };
  }

  png(id: number): Buffer | undefined {
    return this.#entries.find((e) => e.entry.id === id)?.png;
  }
}
