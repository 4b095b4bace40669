// Host RSS and GPU memory over many generations (after gc), printed as it goes, for issue 5's
// leak question: does RSS grow without bound, or settle? Run by bench/gpu/run.sh (PART=p):
//   node --expose-gc bench/gpu/rss.mjs MODEL SECONDS [graphs|eager]
import { readFileSync } from "node:fs";
import { StableDiffusionPipeline } from "../../dist/index.js";

/** Resident MiB by kind of mapping (/proc/self/smaps): malloc's heap and anonymous maps, the
 * GPU driver's device files, libraries, the rest. */
function residentByMapping() {
  const kinds = {};
  let kind = "other";
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const head = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
    if (head) {
      const name = head[1];
      kind = name === "" ? "anonymous" : name === "[heap]" ? "heap" : name.startsWith("/dev/") ? "device files"
        : /\.so/.test(name) || name.endsWith(".node") ? "libraries" : name.startsWith("[") ? name : "files";
    } else if (line.startsWith("Rss:")) {
      kinds[kind] = (kinds[kind] ?? 0) + Number(line.split(/\s+/)[1]) / 1024;
    }
  }
  return Object.fromEntries(Object.entries(kinds).map(([k, v]) => [k, +v.toFixed(1)]));
}

const [model, seconds = "60", mode = "graphs"] = process.argv.slice(2);
const call = (seed) => ({ prompt: "a lighthouse at dusk", width: 256, height: 256, numInferenceSteps: 4, seed });
const pipe = await StableDiffusionPipeline.fromPretrained(model, { device: "cuda", cudaGraphs: mode === "graphs" });
const mb = (bytes) => +(bytes / 2 ** 20).toFixed(1);
const started = performance.now();
const marks = [10, 25, 50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000];
for (let i = 1; performance.now() - started < Number(seconds) * 1000; i++) {
  await pipe.generate(call(i));
  if (marks.includes(i)) {
    globalThis.gc?.(); globalThis.gc?.();
    const m = process.memoryUsage();
    console.log(JSON.stringify({ mode, arena_max: process.env.MALLOC_ARENA_MAX ?? null, calls: i,
      s: +((performance.now() - started) / 1000).toFixed(1), rss_mb: mb(m.rss), js_heap_mb: mb(m.heapUsed),
      js_heap_total_mb: mb(m.heapTotal), rss_outside_js_heap_mb: mb(m.rss - m.heapTotal),
      external_mb: mb(m.external), array_buffers_mb: mb(m.arrayBuffers), gpu_used_mb: mb(pipe.gpuMemory().used),
      resident_mb: residentByMapping() }));
  }
}
await pipe.dispose();
