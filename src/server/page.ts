/**
 * The page `candlewick serve` shows at `/`: a form (prompt, negative prompt, size, steps,
 * scheduler, seed), live progress from /sdapi/v1/progress, and a gallery of the images made from
 * this page since it was opened, with their parameters and a PNG download each. One HTML string,
 * no build step and no script from elsewhere; it calls the server's own A1111 routes.
 */

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
  #gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; margin-top: 1rem; }
  figure { margin: 0; border: 1px solid #ddd; padding: .5rem; border-radius: 6px; }
  figure img { width: 100%; image-rendering: pixelated; }
  figcaption { font-size: 12px; white-space: pre-wrap; word-break: break-word; }
</style>
</head>
<body>
<h1>Candlewick</h1>
<form id="form">
  <label for="prompt">Prompt</label><textarea id="prompt" name="prompt" required>a large red circle on a white background, top left</textarea>
  <label for="negative">Negative prompt</label><input id="negative" name="negative_prompt">
  <label for="width">Width</label><input id="width" name="width" type="number" step="8" min="8" placeholder="model's">
  <label for="height">Height</label><input id="height" name="height" type="number" step="8" min="8" placeholder="model's">
  <label for="steps">Steps</label><input id="steps" name="steps" type="number" min="1" max="1000" value="20">
  <label for="scheduler">Scheduler</label>
  <select id="scheduler" name="sampler_name">
    <option value="">model's own</option>
    <option>DDIM</option><option>PLMS</option><option>Euler</option><option>Euler a</option><option>Heun</option>
    <option>DPM++ 2M</option><option>DPM++ 2M Karras</option><option>DPM++ 2M SDE</option><option>UniPC</option><option>LCM</option>
  </select>
  <label for="seed">Seed</label><input id="seed" name="seed" type="number" min="-1" value="-1" title="-1: random">
  <label for="token">Token</label><input id="token" name="token" type="password" placeholder="only if the server wants one" autocomplete="off">
  <button id="go" type="submit">Generate</button>
</form>
<p id="status"></p>
<progress id="bar" max="1" value="0" hidden></progress>
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
let polling;
async function poll() {
  try {
    const r = await fetch("/sdapi/v1/progress", { headers: headers() });
    if (!r.ok) return;
    const p = await r.json();
    $("bar").value = p.progress;
    $("status").textContent = p.state.sampling_steps ? "step " + p.state.sampling_step + " of " + p.state.sampling_steps + (p.state.job_count > 1 ? " (" + p.state.job_count + " jobs)" : "") : "waiting in the queue";
  } catch {}
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = new FormData($("form"));
  const body = { prompt: f.get("prompt"), negative_prompt: f.get("negative_prompt") || "" };
  for (const key of ["width", "height", "steps", "seed"]) if (f.get(key) !== "") body[key] = Number(f.get(key));
  if (f.get("sampler_name")) body.sampler_name = f.get("sampler_name");
  $("error").textContent = "";
  $("go").disabled = true;
  $("bar").hidden = false;
  $("bar").value = 0;
  polling = setInterval(poll, 250);
  try {
    const r = await fetch("/sdapi/v1/txt2img", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || r.statusText);
    const info = JSON.parse(answer.info);
    answer.images.forEach((png, i) => addImage(png, info.infotexts[i], info.all_seeds_exact[i]));
    $("status").textContent = "done";
  } catch (error) {
    $("error").textContent = String(error.message || error);
    $("status").textContent = "";
  } finally {
    clearInterval(polling);
    $("go").disabled = false;
    $("bar").hidden = true;
  }
});
function addImage(png, infotext, seed) {
  const url = URL.createObjectURL(new Blob([Uint8Array.from(atob(png), (c) => c.charCodeAt(0))], { type: "image/png" }));
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
</script>
</body>
</html>
`;
