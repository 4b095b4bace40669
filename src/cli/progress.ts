/**
 * The CLI's progress displays: a bar redrawn in place on a terminal, plain lines otherwise. One
 * for denoising steps, one for a batch's images (with the time left), one for downloads.
 */

import type { DownloadProgress } from "../hub/download.js";
import type { GenerateProgress } from "../options.js";

/** The part of a stream the display needs (process.stderr fits). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** A bar on one terminal line: `[#####-----] text`. */
class Bar {
  #drawn = false;

  constructor(readonly stream: ProgressStream) {}

  get isTTY(): boolean {
    return this.stream.isTTY === true;
  }

  draw(fraction: number, text: string): void {
    const width = Math.max(10, Math.min(40, (this.stream.columns ?? 80) - text.length - 4));
    const filled = Math.round(width * Math.min(1, Math.max(0, fraction)));
    // \r: back to the line's start; ESC[K: clear what a longer previous line left.
    this.stream.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}\x1b[K`);
    this.#drawn = true;
  }

  /** End the bar's line (on a terminal). */
  finish(): void {
    if (this.#drawn) this.stream.write("\n");
    this.#drawn = false;
  }
}

/** Denoising steps of one generate call. */
export class ProgressDisplay extends Bar {
  readonly #started = performance.now();

  /** Report a finished denoising step. */
  step({ step, totalSteps }: GenerateProgress): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const rate = `${(seconds / step).toFixed(2)} s/step`;
    if (!this.isTTY) this.stream.write(`step ${step}/${totalSteps} (${rate})\n`);
    else this.draw(step / totalSteps, `${step}/${totalSteps} steps, ${rate}`);
  }
}

/** Images of a batch: how many are done, the rate of this run, and the time left. */
export class BatchDisplay extends Bar {
  readonly #started = performance.now();
  #doneNow = 0;

  constructor(stream: ProgressStream, readonly total: number, public done: number) {
    super(stream);
  }

  /** Report a written image. */
  image(file: string): void {
    this.done++;
    this.#doneNow++;
    const perImage = (performance.now() - this.#started) / 1000 / this.#doneNow;
    const text = `${this.done}/${this.total} images, ${perImage.toFixed(2)} s/image, ETA ${duration(perImage * (this.total - this.done))}`;
    if (!this.isTTY) this.stream.write(`${file}: ${text}\n`);
    else this.draw(this.done / this.total, text);
  }
}

/** Bytes of a model download; on a terminal at most 10 redraws a second, otherwise a line per file. */
export class DownloadDisplay extends Bar {
  #last = 0;

  update(p: DownloadProgress): void {
    const fileDone = p.fileLoaded === p.fileTotal;
    if (!this.isTTY) {
      if (fileDone) this.stream.write(`downloaded ${p.repoId}/${p.file} (${megabytes(p.fileTotal)})\n`);
      return;
    }
    const now = performance.now();
    if (now - this.#last < 100 && !fileDone) return;
    this.#last = now;
    this.draw(p.total > 0 ? p.loaded / p.total : 0, `${megabytes(p.loaded)}/${megabytes(p.total)} ${p.file}`);
  }
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** 75 -> "1m15s", 3700 -> "1h01m". */
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
