"""Issue 21's one results file: what bench/gpu/round10.sh PART=final wrote under OUT, gathered into OUT/issue21.json
with each of the issue's targets and whether this run met it; prints the table.

    python3 bench/gpu/issue21.py OUT
"""
import datetime
import glob
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


def jsonl(name):
    path = os.path.join(out, name)
    return [json.loads(line) for line in open(path) if line.startswith("{")] if os.path.exists(path) else []


rows = (load("candlewick.json") or {}).get("rows", [])
b1 = next((r for r in rows if r["batch"] == 1), None)
b8 = next((r for r in rows if r["batch"] == 8), None)
diffusers = {r["name"]: r for r in jsonl("diffusers.jsonl") if "name" in r}
find = lambda word: next((r for name, r in diffusers.items() if word in name), None)
best, ro = find("max-autotune"), find("reduce-overhead")
eager = next((r for name, r in diffusers.items() if "compile" not in name), None)
fresh = [r for r in jsonl("startup-all.jsonl") if r.get("process_to_first_image_s") and r.get("process") != "fill"]
parity = {os.path.basename(p)[7:-5]: json.load(open(p))["parity"] for p in glob.glob(os.path.join(out, "parity-*.json"))}
profiles = [json.loads(line)["candlewick_profile"] for line in open(os.path.join(out, "profile.txt"))
            if line.startswith('{"candlewick_profile"')] if os.path.exists(os.path.join(out, "profile.txt")) else []

ratio = lambda a, b: b["median_s"] / a["median_s"] if a and b else None
first = min((r["process_to_first_image_s"] for r in fresh), default=None)
# The GPU issue's bounds (issue 3): from diffusers' f32 latents, f32 within 1e-3 and f16 within 2e-2 max-abs relative.
# Session 22's results file checked f16 against 1e-3 (the f32 bound) by mistake; its values are unchanged by this.
rel = lambda name: max(((parity.get(name) or {}).get("latents_max_abs_rel") or {}).values(), default=None)
f16_rel, f32_rel = rel("f16-flash"), rel("f32")
targets = {
    "batch_1_s": (b1 and b1["median_s"], "<= 0.21", b1 is not None and b1["median_s"] <= 0.21),
    "vs_torch_compile_reduce_overhead": (ratio(b1, ro), ">= 1.8", ratio(b1, ro) is not None and ratio(b1, ro) >= 1.8),
    "vs_max_autotune_recipe": (ratio(b1, best), "reported beside it", best is not None),
    "vs_diffusers_eager": (ratio(b1, eager), "reported", eager is not None),
    "batch_8_images_per_s": (b8 and b8["images_per_s"], ">= 6.0", b8 is not None and b8["images_per_s"] >= 6.0),
    "fresh_process_to_first_image_s": (first, "<= 1.0", first is not None and first <= 1.0),
    "peak_gib_vs_diffusers": ((b1 and b1["peak_gib"], ro and ro["peak_gib"]), "at most diffusers'",
                              b1 is not None and ro is not None and b1["peak_gib"] <= ro["peak_gib"]),
    "parity_f16_latents_max_abs_rel": (f16_rel, "<= 2e-2", f16_rel is not None and f16_rel <= 2e-2),
    "parity_f32_latents_max_abs_rel": (f32_rel, "<= 1e-3", f32_rel is not None and f32_rel <= 1e-3),
}
result = {
    "issue": 21, "date": datetime.date.today().isoformat(), "gpu": open(os.path.join(out, "gpu.txt")).read().strip(),
    "package": (load("package.json") or {}).get("version"), "build": "tarballs of a fresh clone, installed as npm would",
    "commit": open(os.path.join(out, "commit.txt")).read().strip() if os.path.exists(os.path.join(out, "commit.txt")) else None,
    "targets": {k: {"value": v, "target": t, "met": m} for k, (v, t, m) in targets.items()},
    "candlewick": rows, "diffusers": list(diffusers.values()), "fresh_processes": fresh, "parity": parity,
    "profile_ms_by_layer": profiles,
}
json.dump(result, open(os.path.join(out, "issue21.json"), "w"), indent=1)
for k, v in result["targets"].items():
    print(f"{k:34} {str(v['value']):>40} {v['target']:>20} {'met' if v['met'] else 'MISSED'}")
