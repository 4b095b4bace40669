// The page that `candlewick serve` shows at `/`, end to end in a real browser: headless Chromium
// (scripts/chromium.sh: one on PATH, else Debian's chromium unpacked without root into the
// download cache) driven by playwright-core, against createServer() on the tiny model
// (test/fixtures/tiny-sd, made by scripts/make_fixtures.py). The form is filled and sent as a
// person would; progress and the latents' preview show while it runs; the image lands in the
// gallery with its parameters; its PNG downloads with the asked size, candlewick's text chunks and
// the pixels a direct generate makes; a bad value shows the library's message; the gallery holds
// every image made since the server started, from any client. Skipped, saying why, where no
// browser can be had.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import test from "ava";
import pngjs from "pngjs";
import { chromium, type Browser, type Page } from "playwright-core";

import { createServer, readTextChunks, type CandlewickServer } from "../src/index.js";
import { StableDiffusionPipeline } from "../src/pipeline.js";
import { ROOT, TINY_SD } from "./helpers/fixtures.js";

/** The browser to drive, or why there is none. */
function findChromium(): { path: string } | { why: string } {
  try {
    const path = execFileSync("bash", [join(ROOT, "scripts/chromium.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    return { path };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    return { why: `no headless Chromium could be had (${stderr || (error as Error).message})` };
  }
}

const found = findChromium();
const browserTest = "path" in found ? test.serial : test.serial.skip;
if ("why" in found) console.warn(`page tests skipped: ${found.why}`);
const skipped = "why" in found ? ` (skipped: ${found.why})` : "";

// Steps enough for the page's image (64x64) to take about 3 s on this machine, measured before
// the tests, so that the page's progress polls (every 250 ms) see it running, fast machine or slow.
let steps = 0;
let pipe: StableDiffusionPipeline;
let server: CandlewickServer;
let url: string;
let browser: Browser;
let page: Page;

test.before(async () => {
  if (!("path" in found)) return;
  pipe = await StableDiffusionPipeline.fromPretrained(TINY_SD, { device: "cpu" });
  const started = performance.now();
  await pipe.generate({ prompt: "timing", width: 64, height: 64, numInferenceSteps: 4, seed: 0 });
  steps = Math.min(300, Math.max(4, Math.ceil(3000 / ((performance.now() - started) / 4))));
  server = await createServer({ model: pipe, modelName: "tiny-sd", previewEvery: 1 });
  url = await server.listen({ port: 0 });
  browser = await chromium.launch({ executablePath: found.path, headless: true, timeout: 60_000 });
  page = await browser.newPage({ acceptDownloads: true });
  page.setDefaultTimeout(30_000);
});

/**
 * Wait until `expression`, run in the page (where the page's own `$` is getElementById), is
 * truthy; its value. Strings, as the tests are compiled without the DOM's types.
 */
async function until(expression: string, timeout = 30_000): Promise<unknown> {
  return (await page.waitForFunction(expression, undefined, { timeout })).jsonValue();
}

/**
 * Wait until the request the form sent has ended (the button is enabled again); the status and
 * error lines it left, so that a failure shows what the page said.
 */
async function ended(timeout = 60_000): Promise<{ status: string; error: string }> {
  return (await until(`!$("go").disabled && { status: $("status").textContent, error: $("error").textContent }`, timeout)) as { status: string; error: string };
}

test.after.always(async () => {
  await browser?.close();
  await server?.close();
  await pipe?.dispose();
});

browserTest(`the form makes an image: progress and preview while it runs, then the gallery with its parameters and a PNG download${skipped}`, async (t) => {
  await page.goto(`${url}/`);
  await page.fill("#prompt", "a red square");
  await page.fill("#negative", "blur");
  await page.fill("#width", "64");
  await page.fill("#height", "64");
  await page.fill("#steps", String(steps));
  await page.selectOption("#scheduler", "Euler");
  await page.fill("#seed", "1234");
  await page.click("#go");

  // While it runs: the step count, and a preview of the latents (64 / the VAE's scale factor a side).
  await until(`/^step [1-9]\\d* of ${steps}$/.test($("status").textContent)`);
  const preview = await until(`(() => {
    const img = $("preview");
    return !img.hidden && img.src.startsWith("data:image/png;base64,") && img.complete && img.naturalWidth > 0 && [img.naturalWidth, img.naturalHeight];
  })()`);
  const side = 64 / pipe.vaeScaleFactor;
  t.deepEqual(preview, [side, side]);
  t.true(await page.isDisabled("#go"), "the button is disabled while it runs");

  // Done: one figure in the gallery, its caption the image's parameters.
  t.deepEqual(await ended(), { status: "done: 1 image", error: "" });
  t.is(await page.locator("#gallery figure").count(), 1);
  const caption = await page.textContent("#gallery figure figcaption");
  t.regex(caption ?? "", new RegExp(`^a red square\\nNegative prompt: blur\\nSteps: ${steps}, Sampler: Euler, CFG scale: [\\d.]+, Seed: 1234, Size: 64x64, Model: tiny-sd`));
  t.deepEqual(await until(`(() => { const img = document.querySelector("#gallery figure img"); return img.complete && [img.naturalWidth, img.naturalHeight]; })()`), [64, 64]);

  // The download: a PNG of the asked size, candlewick's text chunks, the pixels the seed makes.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#gallery figure a")]);
  t.is(download.suggestedFilename(), "candlewick-1234.png");
  const file = readFileSync(await download.path());
  t.deepEqual([...file.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const png = pngjs.PNG.sync.read(file);
  t.deepEqual([png.width, png.height], [64, 64]);
  const text = readTextChunks(file);
  t.like(text, { prompt: "a red square", negativePrompt: "blur", seed: "1234", size: "64x64", steps: String(steps), model: "tiny-sd" });
  t.regex(text.scheduler ?? "", /^EulerDiscreteScheduler/);
  t.is(text.parameters, caption ?? undefined);
  const [expected] = await pipe.generate({ prompt: "a red square", negativePrompt: "blur", width: 64, height: 64, numInferenceSteps: steps, scheduler: "euler", seed: 1234 });
  const rgb = Buffer.alloc(64 * 64 * 3);
  for (let i = 0; i < 64 * 64; i++) png.data.copy(rgb, i * 3, i * 4, i * 4 + 3);
  t.true(rgb.equals(Buffer.from(expected!.data)), "the downloaded image is not the one its seed makes");
});

browserTest(`a bad value shows the library's message, and the page goes on${skipped}`, async (t) => {
  await page.fill("#width", "50");
  await page.fill("#steps", "2");
  await page.click("#go");
  await until(`$("error").textContent !== ""`);
  t.is(await page.textContent("#error"), "Expected integer multiple of 8 for width but received 50");
  t.is(await page.textContent("#status"), "");
  t.false(await page.isDisabled("#go"));
  t.is(await page.locator("#gallery figure").count(), 1, "nothing was added");
  await page.fill("#width", "64");
  await page.click("#go");
  t.deepEqual(await ended(), { status: "done: 1 image", error: "" });
  t.is(await page.locator("#gallery figure").count(), 2);
});

browserTest(`the gallery holds every image made since the server started, from any client, after a reload${skipped}`, async (t) => {
  const made = await fetch(`${url}/v1/images/generations`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "from another client", size: "32x32", steps: 2, seed: 77 }),
  });
  t.is(made.status, 200);
  await page.reload();
  await until(`document.querySelectorAll("#gallery figure").length === 3`);
  const captions = await page.locator("#gallery figcaption").allTextContents();
  t.regex(captions[0]!, /^from another client\n.*Seed: 77, Size: 32x32/s, "newest first");
  t.regex(captions[2]!, /^a red square\n/);
  const listed = (await (await fetch(`${url}/gallery`)).json()) as { keep: number; images: { id: number; url: string; seed: string }[] };
  t.is(listed.keep, 64);
  t.deepEqual(listed.images.map((i) => i.seed), ["77", "1234", "1234"]);
  t.is((await fetch(`${url}${listed.images[0]!.url}`)).headers.get("content-type"), "image/png");
  t.is((await fetch(`${url}/gallery/999.png`)).status, 404);
});

browserTest(`a progress answer that comes after the image leaves the result alone${skipped}`, async (t) => {
  // Each progress answer held back 1 s: polls sent while the image runs answer after it is done,
  // as they can on a loaded machine; before the page ignored them they wrote "step n of n" or
  // "waiting in the queue" over "done".
  await page.route("**/sdapi/v1/progress", async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await route.continue().catch(() => {});
  });
  try {
    await page.fill("#steps", String(Math.max(4, Math.ceil(steps / 3))));
    await page.click("#go");
    t.deepEqual(await ended(), { status: "done: 1 image", error: "" });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    t.is(await page.textContent("#status"), "done: 1 image");
    t.true(await page.isHidden("#preview"), "a late preview does not show again");
  } finally {
    await page.unroute("**/sdapi/v1/progress");
  }
});
