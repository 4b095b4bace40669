/**
 * The page `candlewick serve` shows at `/`: a form (prompt, negative prompt, size, steps,
 * scheduler, seed), live progress and a preview of the latents from /sdapi/v1/progress, and a
 * gallery of the images the server made since it started (GET /gallery), with their parameters
 * and a PNG download each. One HTML string, no build step and no script from elsewhere; it calls
 * the server's own routes, so what it shows (errors included) is what any client gets. The form
 * does not check values itself (`novalidate`): the server's messages say what is wrong.
 */

import { SAMPLER_NAMES } from "./a1111.js";

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");

export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Candlewick</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 980px; padding: 1rem; color: #222; }
  h1 { font-size: 1.3rem; }
  form { display: grid; grid-template-columns: 9rem 1fr; gap: .4rem .8rem; align-items: center; }
  textarea { min-height: 3.2em; }
  input, select, textarea, button { font: inherit; padding: .25rem .4rem; }
  button { grid-column: 2; justify-self: start; padding: .35rem 1.2rem; }
  progress { width: 100%; }
  #status { min-height: 1.4em; color: #555; }
  #error { color: #b00020; white-space: pre-wrap; }
  #preview { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ddd; }
  #gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; margin-top: 1rem; }
  figure { margin: 0; border: 1px solid #ddd; padding: .5rem; border-radius: 6px; }
  figure img { width: 100%; image-rendering: pixelated; }
  figcaption { font-size: 12px; white-space: pre-wrap; word-break: break-word; }
</style>
</head>
<body>
<h1>Candlewick</h1>
<form id="form" novalidate>
  <label for="prompt">Prompt</label><textarea id="prompt" name="prompt">a large red circle on a white background, top left</textarea>
  <label for="negative">Negative prompt</label><input id="negative" name="negative_prompt">
  <label for="width">Width</label><input id="width" name="width" type="number" step="8" min="8" placeholder="model's">
  <label for="height">Height</label><input id="height" name="height" type="number" step="8" min="8" placeholder="model's">
  <label for="steps">Steps</label><input id="steps" name="steps" type="number" min="1" max="1000" value="20">
  <label for="scheduler">Scheduler</label>
  <select id="scheduler" name="sampler_name">
    <option value="">model's own</option>
    ${SAMPLER_NAMES.map((name) => `<option>${escape(name)}</option>`).join("")}
  </select>
  <label for="seed">Seed</label><input id="seed" name="seed" type="number" min="-1" value="-1" title="-1: random">
  <label for="token">Token</label><input id="token" name="token" type="password" placeholder="only if the server wants one" autocomplete="off">
  <button id="go" type="submit">Generate</button>
</form>
<p id="status"></p>
<progress id="bar" max="1" value="0" hidden></progress>
<img id="preview" alt="preview of the latents" hidden>
<p id="error"></p>
<div id="gallery"></div>
<script>
const $ = (id) => document.getElementById(id);
$("token").value = localStorage.getItem("candlewick-token") || "";
function headers() {
  const token = $("token").value.trim();
  localStorage.setItem("candlewick-token", token);
  return token ? { "content-type": "application/json", authorization: "Bearer " + token } : { "content-type": "application/json" };
}
// The request the progress polls belong to; a poll that answers after its request has ended
// (its fetch was in flight when the image came back) writes nothing over the result.
let running = 0;
async function poll(request) {
  try {
    const r = await fetch("/sdapi/v1/progress", { headers: headers() });
    if (!r.ok) return;
    const p = await r.json();
    if (request !== running) return; // this request is over: its result stays
    $("bar").value = p.progress;
    $("status").textContent = p.state.sampling_steps ? "step " + p.state.sampling_step + " of " + p.state.sampling_steps + (p.state.job_count > 1 ? " (" + p.state.job_count + " jobs)" : "") : "waiting in the queue";
    if (p.current_image) {
      $("preview").src = "data:image/png;base64," + p.current_image;
      $("preview").hidden = false;
    }
  } catch {}
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = new FormData($("form"));
  const body = { prompt: f.get("prompt"), negative_prompt: f.get("negative_prompt") || "" };
  for (const key of ["width", "height", "steps", "seed"]) if (f.get(key) !== "") body[key] = Number(f.get(key));
  if (f.get("sampler_name")) body.sampler_name = f.get("sampler_name");
  $("error").textContent = "";
  $("status").textContent = "sent";
  $("go").disabled = true;
  $("bar").hidden = false;
  $("bar").value = 0;
  const request = ++running;
  const polling = setInterval(() => poll(request), 250);
  try {
    const r = await fetch("/sdapi/v1/txt2img", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || r.statusText);
    const info = JSON.parse(answer.info);
    // From the gallery; where the server keeps none, from the answer.
    if (!(await showGallery())) answer.images.forEach((png, i) => addImage(pngUrl(png), info.infotexts[i], info.all_seeds_exact[i]));
    $("status").textContent = "done: " + answer.images.length + (answer.images.length === 1 ? " image" : " images");
  } catch (error) {
    $("error").textContent = String(error.message || error);
    $("status").textContent = "";
  } finally {
    running++;
    clearInterval(polling);
    $("go").disabled = false;
    $("bar").hidden = true;
    $("preview").hidden = true;
  }
});
const pngUrl = (b64) => URL.createObjectURL(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: "image/png" }));
const shown = new Set();
/** Add the gallery's images not shown yet; false when the server keeps none. */
async function showGallery() {
  const r = await fetch("/gallery", { headers: headers() });
  if (r.status === 401) $("error").textContent = "This server wants a token: enter it in the Token field.";
  if (!r.ok) return false;
  const gallery = await r.json();
  for (const entry of gallery.images.slice().reverse()) {
    if (shown.has(entry.id)) continue;
    shown.add(entry.id);
    const png = await fetch(entry.url, { headers: headers() });
    if (png.ok) addImage(URL.createObjectURL(await png.blob()), entry.parameters, entry.seed);
  }
  return gallery.keep > 0;
}
function addImage(url, infotext, seed) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = infotext.split("\\n")[0];
  const caption = document.createElement("figcaption");
  caption.textContent = infotext;
  const link = document.createElement("a");
  link.href = url;
  link.download = "candlewick-" + seed + ".png";
  link.textContent = "download PNG";
  figure.append(img, caption, link);
  $("gallery").prepend(figure);
}
$("token").addEventListener("change", () => showGallery().catch(() => {}));
showGallery().catch(() => {});
</script>
</body>
</html>
`;
