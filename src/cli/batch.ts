/**
 * `candlewick batch <prompts.jsonl> --out <dir>`: one PNG per line of a JSON Lines file, each with
 * its generation parameters in text chunks, a manifest line per image, a progress bar with the
 * time left; resumable: a rerun of the same command makes only what is missing.
 */

import { mkdir, readdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";

import { CandlewickError, INVALID_OPTION } from "../errors.js";
import { Manifest, MANIFEST, recordKey, type ManifestRecord } from "../batch/manifest.js";
import { DEFAULT_BATCH_SIZE } from "../batch/generate-batch.js";
import type { BatchDefaults } from "../batch/inputs.js";
import { readPromptsFile, type PromptLine } from "../batch/prompts-file.js";
import type { GeneratedImage } from "../image.js";
import type { StableDiffusionPipeline } from "../pipeline.js";
import { count, integerIn } from "../validate.js";
import { COMMON_FLAGS, COMMON_HELP, integer, loadOptionsFrom, parseFlags, seedFrom, settingsFrom } from "./flags.js";
import { reportError } from "./generate.js";
import { DEFAULT_MODEL, loadModel } from "./model.js";
import { writeFileAtomically, writeOutput as writeOutputThen } from "./output.js";
import { loraRecords, modelHashOf } from "./hashes.js";
import { imageParameters, loraTag, pngText, resolvedOf, type LoraRecord } from "./parameters.js";
import { BatchDisplay } from "./progress.js";
import { UsageError } from "./usage.js";

export const BATCH_HELP = `Usage: candlewick batch <prompts.jsonl> --out <dir> [options]

Generate one image per line of a JSON Lines file into a folder: PNG files named after their line
(00007.png for line 7) that carry their generation parameters in text chunks, and ${MANIFEST}
with one line per image. Run the same command again after an interruption: it skips what is done.

Each line of the prompts file is a prompt string, or an object with "prompt" and any of
"negativePrompt", "seed", "numInferenceSteps", "guidanceScale", "width", "height", "scheduler",
"image" and "maskImage" (paths from the working directory: image to image, inpainting) and
"strength" and "paddingMaskCrop" (as in the library; SDXL's options too, such as "prompt2" and "negativePrompt2"),
"loras" and "id" (copied into the manifest). Blank lines are
skipped. The flags below are the defaults of lines that do not say.

LoRAs per line: "loras": [{"path": "a.safetensors", "weight": 0.8}] (paths from the working
directory), or the web UI's tags in the prompt, <lora:name:0.8> (or <lora:name>, weight 1), for
--lora-dir's name.safetensors; the tags are taken out of the prompt the model reads and kept in the
one the PNG records. A line's LoRAs are added to the --lora ones. Lines run in groups of the same
LoRA set (each set fused once); a line whose LoRA file is missing, damaged or does not fit the model
is skipped with an error naming the line, the file and why, the others go on (exit code 1; a rerun
makes just the skipped lines).

Options:
  --out, -o <dir>           Output folder, created if missing (required)
${COMMON_HELP.model}
${COMMON_HELP.settings}
  --seed <n>                Base seed: line N without its own seed gets n + N (default: random seeds)
  --batch-size <n>          Images per GPU batch, 1-64 (default: ${DEFAULT_BATCH_SIZE})
  --lora-dir <dir>          The folder of the LoRAs that prompts name with <lora:name:weight>
${COMMON_HELP.device}

Example:
  candlewick batch prompts.jsonl --out renders/ --model ./stable-diffusion-v1-5 --steps 30 --seed 1
`;

const OPTIONS = {
  ...COMMON_FLAGS,
  out: { type: "string", short: "o" },
  "batch-size": { type: "string" },
  "lora-dir": { type: "string" },
} as const;

/** Run the command; returns the exit code. */
export async function batch(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, "batch");
  if (values.help) {
    process.stdout.write(BATCH_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? "missing the prompts file" : `expected one prompts file but received ${positionals.length}`, "batch");
  }
  if (values.out === undefined) throw new UsageError("missing --out <dir>", "batch");
  const { settings, batchSize, baseSeed, load } = checkFlags(values);
  const quiet = values.quiet === true;
  const say = (text: string) => quiet || process.stderr.write(`${text}\n`);
  const outDir = values.out;
  const model = values.model ?? DEFAULT_MODEL;

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  let [total, done, written] = [0, 0, 0];
  const failed: string[] = [];
  const fail = (message: string) => {
    failed.push(message);
    process.stderr.write(`candlewick: ${message}\n`);
  };
  try {
    // Everything that can be wrong with the input or the folder is found before the model loads.
    const lines = await readPromptsFile(positionals[0]!, settings, baseSeed, values["lora-dir"]);
    total = lines.length;
    const manifest = await openOutput(outDir);
    // Each line's LoRA set (the --lora ones, then its own), hashed; a line whose LoRA file is missing or
    // damaged fails alone (a bad --lora file fails the run: every line has it).
    const flagLoras = (load.loras ?? []).map((l) => ({ path: resolve(l.path), weight: l.weight ?? 1 }));
    await loraRecords(flagLoras);
    const sets = new Map<number, LoraRecord[]>();
    for (const l of lines) {
      try {
        sets.set(l.line, await loraRecords([...flagLoras, ...l.loras]));
      } catch (error) {
        if (!(error instanceof CandlewickError)) throw error;
        fail(`${positionals[0]}:${l.line}: ${error.message}; the line is skipped`);
      }
    }
    const usable = lines.filter((l) => sets.has(l.line));
    const keys = new Map(usable.map((l) => [l.line, keyOf(l, model, sets.get(l.line)!)]));
    done = await manifest.keep(keys);
    const todo = usable.filter((l) => !manifest.isDone(l.line, keys.get(l.line)!));
    if (done > 0) say(`${done} of ${count(total, "image")} ${done === 1 ? "is" : "are"} already in ${outDir}; making the other ${todo.length}`);
    if (todo.length === 0) return finish();

    // A local checkpoint file is hashed while the model loads (the same hash, from the cache, is read after).
    if (values.model !== undefined) void modelHashOf(values.model).catch(() => undefined);
    const pipe = await loadModel(values.model, { ...load, signal: controller.signal }, quiet, say);
    const modelHash = await modelHashOf(pipe.modelDir);
    const display = new BatchDisplay(process.stderr, total, done);
    const width = Math.max(5, String(lines.at(-1)!.line).length);
    // Lines share a call only when they share a LoRA set: one group per set, the loaded (--lora) set
    // first, so that each other set is fused once (setLoras), the fewest switches there can be.
    let current = setKey(flagLoras);
    for (const group of groupsBySet(todo, sets, current)) {
      const set = sets.get(group[0]!.line)!;
      if (setKey(set) !== current) {
        const lines = `${group.length === 1 ? "line" : "lines"} ${group.map((l) => l.line).join(", ")}`;
        say(set.length === 0 ? `Removing the LoRAs for ${lines}` : `Fusing ${set.map(loraTag).join(" ")} for ${lines}`);
        try {
          await pipe.setLoras(set.map((l) => ({ path: l.path, weight: l.weight })));
          current = setKey(set);
        } catch (error) {
          if (!(error instanceof CandlewickError) || error.name === "AbortError") throw error;
          const which = group.map((l) => l.line).join(",");
          fail(`${positionals[0]}:${which}: cannot fuse the ${group.length === 1 ? "line's" : "lines'"} LoRAs: ${error.message}; ${group.length === 1 ? "the line is" : "these lines are"} skipped`);
          continue;
        }
      }
      const results = pipe.generateBatch(group.map((l) => l.input), {
        batchSize,
        signal: controller.signal,
        onWarning: (message) => say(`warning: ${message}`),
      });
      for await (const { index, image } of results) {
        const line = group[index]!;
        const file = `${String(line.line).padStart(width, "0")}.png`;
        const record = recordOf(line, image, model, keys.get(line.line)!, file, { modelHash, loras: set });
        const path = join(outDir, record.file);
        await writeFileAtomically(path, image.toPng({ text: pngText(record) }), KEPT);
        await writeOutput(manifest.path, () => manifest.append(record));
        written++;
        process.stdout.write(`${path}\n`);
        if (!quiet) display.image(record.file);
      }
    }
    await writeOutput(manifest.path, () => manifest.rewrite());
    say(`Wrote ${count(written, "image")} to ${outDir} (${total} in all, listed in ${join(outDir, MANIFEST)})`);
    return finish();
  } catch (error) {
    const missing = total - done - written;
    return reportError(error, `candlewick: interrupted with ${done + written} of ${count(total, "image")} done; run the same command again to make the other ${missing}\n`);
  } finally {
    process.off("SIGINT", onSigint);
  }

  /** Exit code 0, or 1 when lines failed (said again at the end, so it is not lost above the progress). */
  function finish(): number {
    if (failed.length === 0) return 0;
    process.stderr.write(`candlewick: ${count(failed.length, "problem")} left lines without images (above); fix them and run the same command again to make just those\n`);
    return 1;
  }
}

/** A LoRA set as a key: paths and weights, in order. */
function setKey(set: readonly { path: string; weight: number }[]): string {
  return JSON.stringify(set.map((l) => [l.path, l.weight]));
}

/** The lines grouped by LoRA set, in the order of their first line, the group of set `first` (the loaded one) first. */
function groupsBySet(lines: readonly PromptLine[], sets: ReadonlyMap<number, LoraRecord[]>, first: string): PromptLine[][] {
  const groups = new Map<string, PromptLine[]>();
  for (const l of lines) {
    const key = setKey(sets.get(l.line)!);
    groups.set(key, [...(groups.get(key) ?? []), l]);
  }
  const loaded = groups.get(first);
  return loaded ? [loaded, ...[...groups].filter(([key]) => key !== first).map(([, g]) => g)] : [...groups.values()];
}

/** The flags, checked; a bad value is a usage error. */
function checkFlags(values: ReturnType<typeof parseFlags<typeof OPTIONS>>["values"]) {
  try {
    const batchSize = values["batch-size"] === undefined ? DEFAULT_BATCH_SIZE : integerIn(integer(values["batch-size"]), "--batch-size", 1, 64);
    const baseSeed = values.seed === undefined ? undefined : seedFrom(values.seed);
    return { settings: settingsFrom(values) as BatchDefaults, batchSize, baseSeed, load: loadOptionsFrom(values) };
  } catch (error) {
    if (error instanceof CandlewickError && error.code === INVALID_OPTION) throw new UsageError(error.message, "batch");
    throw error;
  }
}

/** Create the output folder and check that it takes files, before any work. */
async function openOutput(dir: string): Promise<Manifest> {
  await writeOutput(dir, () => mkdir(dir, { recursive: true }));
  // A PNG a killed run was writing: its line is made again.
  for (const name of await readdir(dir)) if (name.endsWith(".png.tmp")) await writeOutput(dir, () => rm(join(dir, name), { force: true }));
  const manifest = await writeOutput(dir, () => Manifest.open(dir));
  await writeOutput(dir, () => manifest.rewrite());
  return manifest;
}

const KEPT = "; what was finished is kept";

/** A write whose failure names the path, as ERR_CANDLEWICK_OUTPUT (and says that finished images are kept). */
function writeOutput<T>(path: string, write: () => Promise<T>): Promise<T> {
  return writeOutputThen(path, write, KEPT);
}

/** What decides a line's image: its prompts, settings, seed (unless drawn at random), the model and the LoRAs (files by hash). */
function keyOf(l: PromptLine, model: string, loras: readonly LoraRecord[]): string {
  const c = l.checked;
  const parts: unknown[] = [c.prompt, c.negativePrompt, c.key, l.randomSeed ? "random" : c.seed, model];
  // Without LoRAs the key is what it was before LoRAs were recorded: earlier runs' images are kept.
  if (loras.length > 0) parts.push(loras.map((r) => [r.hash, r.weight]));
  return recordKey(parts);
}

function recordOf(l: PromptLine, image: GeneratedImage, model: string, key: string, file: string, files: Parameters<typeof imageParameters>[6]): ManifestRecord {
  const parameters = imageParameters(l.checked.shared, l.prompt, l.checked.negativePrompt, image.seed, resolvedOf(image), model, files);
  return { line: l.line, ...(l.id !== undefined ? { id: l.id } : {}), file, ...parameters, key };
}
