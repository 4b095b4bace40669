/** The CLI's progress display: a bar redrawn in place on a terminal, plain lines otherwise. */

import type { GenerateProgress } from "../options.js";

/** The part of a stream the display needs (process.stderr fits). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class ProgressDisplay {
  readonly #stream: ProgressStream;
  readonly #started = performance.now();
  #drawn = false;

  constructor(stream: ProgressStream) {
    this.#stream = stream;
  }

  /** Report a finished denoising step. */
  step({ step, totalSteps }: GenerateProgress): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const rate = `${(seconds / step).toFixed(2)} s/step`;
    if (!this.#stream.isTTY) {
      this.#stream.write(`step ${step}/${totalSteps} (${rate})\n`);
      return;
    }
    const text = `${step}/${totalSteps} steps, ${rate}`;
    const width = Math.max(10, Math.min(40, (this.#stream.columns ?? 80) - text.length - 4));
    const filled = Math.round((width * step) / totalSteps);
    // \r: back to the line's start; ESC[K: clear what a longer previous line left.
    this.#stream.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}\x1b[K`);
    this.#drawn = true;
  }

  /** End the bar's line (on a terminal). */
  finish(): void {
    if (this.#drawn) this.#stream.write("\n");
    this.#drawn = false;
  }
}
