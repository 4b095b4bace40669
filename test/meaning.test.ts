// Meaning tests: the trained shapes model (test/fixtures/shapes-sd, made by scripts/train_demo_model.py) must
// draw what the prompt says. Each generated image is measured (test/helpers/measure.ts: the shape's colour, the
// background's colour, the shape's centre and its size) against its prompt, and the share of images that match
// is printed and held to a stated floor. A scheduler with a wrong sign, a swapped guidance term or a mis-mapped
// text encoder fails here even where goldens made the same wrong way would pass.
//
// Every check runs for each entry of SCHEDULERS: add a scheduler there once candlewick has it (and check its
// rates: with DDIM the same cases at 15 steps instead of 20 matched all four attributes in 17/24, not 21/24);
// the other schedulers run the first check only, at the end of this file.
// The floors sit below the rates measured with DDIM on 2026-12-02 (in the comments), leaving room for two to
// four more misses. img2img and inpainting checks belong here once those pipelines exist; running this file
// with the CUDA build on the GPU machine is not done yet (it has no Node unless one is carried there).

import { join } from "node:path";

import test from "ava";

import { StableDiffusionPipeline, type GeneratedImage, type SchedulerChoice, type SchedulerOptions } from "../src/index.js";
import { ROOT } from "./helpers/fixtures.js";
import { caption, measure, readVocabulary, type Attributes, type Measured } from "./helpers/measure.js";

const MODEL = join(ROOT, "test/fixtures/shapes-sd");
const vocab = readVocabulary(MODEL);
const SCHEDULERS: readonly SchedulerOptions[] = [{ type: "ddim" }];
const STEPS = 20;
const CASES = 24;
const NEGATIVE_CASES = 10;
const KEYS = ["colour", "background", "position", "size"] as const;

let pipe: StableDiffusionPipeline;
test.before(async () => {
  pipe = await StableDiffusionPipeline.fromPretrained(MODEL, { device: "cpu", dtype: "f32" });
});

/** mulberry32: a small seeded generator, so the prompts are the same on every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomAttributes(count: number, seed: number): Attributes[] {
  const next = random(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]!;
  const colours = Object.keys(vocab.colours);
  return Array.from({ length: count }, () => {
    const colour = pick(colours);
    return {
      size: pick(Object.keys(vocab.sizes)),
      colour,
      shape: pick(vocab.shapes),
      background: pick(colours.filter((c) => c !== colour)),
      position: pick(Object.keys(vocab.positions)),
    };
  });
}

const measured = (image: GeneratedImage): Measured => measure(image.data, image.width, image.height, vocab);
const share = (hits: number, total: number) => `${hits}/${total} (${Math.round((100 * hits) / total)}%)`;
const schedulerName = (s: SchedulerOptions) => s.type ?? "ddim";

/** Images of the fixed cases at one guidance scale, generated once per scheduler and scale. */
const generated = new Map<string, Promise<Measured[]>>();
function adherenceImages(scheduler: SchedulerOptions, guidanceScale: number): Promise<Measured[]> {
  const key = `${schedulerName(scheduler)}@${guidanceScale}`;
  if (!generated.has(key)) {
    const cases = randomAttributes(CASES, 7);
    generated.set(key, pipe.generate({
      prompt: cases.map(caption), seeds: cases.map((_, i) => i), numInferenceSteps: STEPS, guidanceScale, scheduler,
    }).then((images) => images.map(measured)));
  }
  return generated.get(key)!;
}

function rates(results: Measured[]) {
  const cases = randomAttributes(CASES, 7);
  const hits = Object.fromEntries(KEYS.map((k) => [k, results.filter((m, i) => m[k] === cases[i]![k]).length])) as Record<(typeof KEYS)[number], number>;
  const all = results.filter((m, i) => KEYS.every((k) => m[k] === cases[i]![k])).length;
  return { ...hits, all };
}

for (const scheduler of SCHEDULERS) {
  const name = schedulerName(scheduler);

  test.serial(`[${name}] the shape's colour, the background, the position and the size follow the prompt (guidance 7.5)`, async (t) => {
    const r = rates(await adherenceImages(scheduler, 7.5));
    t.log(`${name}, guidance 7.5, ${STEPS} steps: ${KEYS.map((k) => `${k} ${share(r[k], CASES)}`).join(", ")}; all four ${share(r.all, CASES)}`);
    // DDIM, 2026-12-02: colour 22/24, background 24/24, position 23/24, size 22/24; all four 21/24.
    for (const k of KEYS) t.true(r[k] / CASES >= 0.8, `${k}: ${share(r[k], CASES)} below 80%`);
    t.true(r.all / CASES >= 0.7, `all four: ${share(r.all, CASES)} below 70%`);
  });

  test.serial(`[${name}] guidance 7.5 follows the prompt measurably better than guidance 1`, async (t) => {
    const strong = rates(await adherenceImages(scheduler, 7.5));
    const none = rates(await adherenceImages(scheduler, 1));
    t.log(`${name}: all four attributes match in ${share(none.all, CASES)} at guidance 1, ${share(strong.all, CASES)} at guidance 7.5`);
    t.log(`${name}, guidance 1: ${KEYS.map((k) => `${k} ${share(none[k], CASES)}`).join(", ")}`);
    // DDIM, 2026-12-02: 14/24 at guidance 1, 21/24 at 7.5.
    t.true((strong.all - none.all) / CASES >= 0.15, "guidance 7.5 should match all four attributes at least 15 points more often than guidance 1");
  });

  test.serial(`[${name}] a negative prompt's colour is avoided: the colour a seed would give goes, and a named colour never comes`, async (t) => {
    // Prompts that leave the colour open, so the seed picks one (`base`). The same seeds again with a negative
    // prompt naming that colour (`away`: it must go), and with one naming another colour (`other`: that colour
    // must not appear). A negative prompt that is ignored keeps `away` at the base colour; one applied with the
    // wrong sign draws the named colour. Any change to the unconditional branch re-rolls an open colour, so how
    // often `other` keeps the base colour is printed, not held to a floor.
    const cases = randomAttributes(NEGATIVE_CASES, 11);
    const common = { prompt: cases.map((a) => caption({ ...a, colour: undefined })), seeds: cases.map((_, i) => 100 + i), numInferenceSteps: STEPS, scheduler };
    const base = (await pipe.generate(common)).map(measured);
    const colours = Object.keys(vocab.colours);
    const named = base.map((m) => m.colour ?? "none");
    const other = named.map((c, i) => {
      const candidates = colours.filter((x) => x !== c && x !== cases[i]!.background);
      return candidates[i % candidates.length]!;
    });
    const negative = (names: string[]) => names.map((c, i) => caption({ colour: c, shape: cases[i]!.shape }));
    const away = (await pipe.generate({ ...common, negativePrompt: negative(named) })).map(measured);
    const otherRun = (await pipe.generate({ ...common, negativePrompt: negative(other) })).map(measured);
    const gone = away.filter((m, i) => m.colour !== null && m.colour !== named[i]).length;
    const avoided = otherRun.filter((m, i) => m.colour !== null && m.colour !== other[i]).length;
    const kept = otherRun.filter((m, i) => m.colour === named[i]).length;
    t.log(`${name}: the colour the seed gave went in ${share(gone, NEGATIVE_CASES)} with a negative prompt naming it; ` +
      `a negative naming another colour: that colour avoided in ${share(avoided, NEGATIVE_CASES)}, the seed's colour kept in ${share(kept, NEGATIVE_CASES)}`);
    // DDIM, 2026-12-02 (12 cases): gone 12/12, avoided 12/12, kept 2/12.
    t.true(gone / NEGATIVE_CASES >= 0.9, "the named colour should go in at least 90% of images");
    t.true(avoided / NEGATIVE_CASES >= 0.9, "a colour named in the negative prompt should be absent in at least 90% of images");
  });
}

// Every other scheduler, by the name users give it: the adherence check alone (guidance 7.5), to keep CI short.
// The floors catch a broken scheduler (a wrong sign or a mixed-up step draws colours at random: 1 in 12), they
// do not rank the schedulers. Measured on 2026-12-02 (colour, background, position, size; all four, of 24):
// pndm 16, 24, 24, 22; 15 — euler 22, 24, 23, 22; 21 — euler-a 19, 23, 22, 21; 17 — heun (10 steps) 23, 24, 24,
// 24; 23 — dpm++-2m-karras 20, 24, 21, 21; 20 — dpm++-2m-sde-karras 20, 22, 22, 21; 18 — unipc 24, 24, 24, 23; 23.
// Heun makes two UNet calls a step, so it gets half the steps. LCM and DDPM are left out: LCM is for
// LCM-distilled models (on this model it draws mush, as it does in diffusers), and DDPM needs hundreds of steps.
const OTHERS: readonly { scheduler: Extract<SchedulerChoice, string>; steps: number }[] = [
  { scheduler: "pndm", steps: STEPS },
  { scheduler: "euler", steps: STEPS },
  { scheduler: "euler-a", steps: STEPS },
  { scheduler: "heun", steps: STEPS / 2 },
  { scheduler: "dpm++-2m-karras", steps: STEPS },
  { scheduler: "dpm++-2m-sde-karras", steps: STEPS },
  { scheduler: "unipc", steps: STEPS },
];
for (const { scheduler, steps } of OTHERS) {
  test.serial(`[${scheduler}] the prompt's colour, background, position and size come out (guidance 7.5, ${steps} steps)`, async (t) => {
    const cases = randomAttributes(CASES, 7);
    const images = await pipe.generate({ prompt: cases.map(caption), seeds: cases.map((_, i) => i), numInferenceSteps: steps, guidanceScale: 7.5, scheduler });
    const r = rates(images.map(measured));
    t.log(`${scheduler}, guidance 7.5, ${steps} steps: ${KEYS.map((k) => `${k} ${share(r[k], CASES)}`).join(", ")}; all four ${share(r.all, CASES)}`);
    for (const k of KEYS) t.true(r[k] / CASES >= 0.6, `${k}: ${share(r[k], CASES)} below 60%`);
    t.true(r.all / CASES >= 0.5, `all four: ${share(r.all, CASES)} below 50%`);
  });
}

