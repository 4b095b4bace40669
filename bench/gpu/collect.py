"""Gathers one GPU run's files (bench/gpu/run.sh writes them under OUT) into OUT/results.json, in
the format bench/results/<date>-<card>.json keeps, and prints the speed table.

    python3 bench/gpu/collect.py OUT
"""
import datetime
import json
import os
import sys


def read(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_text(out, name):
    path = os.path.join(out, name)
    return open(path).read().strip() if os.path.exists(path) else None


def test_summary(out):
    """node --test's verdict lines from test-gpu.txt: which tests passed and failed."""
    text = read_text(out, "test-gpu.txt")
    if text is None:
        return None
    lines = [l.strip() for l in text.splitlines()]
    return {"passed": [l.split(" - ", 1)[1] for l in lines if l.startswith("ok ")],
            "failed": [l.split(" - ", 1)[1] for l in lines if l.startswith("not ok ")],
            "notes": [l[2:] for l in lines if l.startswith("# out of memory")]}


def profile(out):
    """CANDLEWICK_PROFILE's lines from profile.txt: bench.mjs ran fp16+flash at batch 1, then at
    batch 8, each a warm-up and one timed call; the timed calls' lines are kept."""
    text = read_text(out, "profile.txt")
    if text is None:
        return None
    lines = [json.loads(l)["candlewick_profile"] for l in text.splitlines() if l.startswith('{"candlewick_profile"')]
    return {"batch_1": lines[1] if len(lines) > 1 else None, "batch_8": lines[3] if len(lines) > 3 else None}


def startup(out):
    """Start-up rows: startup.jsonl (bench/gpu/startup.mjs), the library's one-time costs
    (CANDLEWICK_PROFILE_STARTUP lines) and diffusers' load + first image from the same call."""
    text = read_text(out, "startup.jsonl")
    if text is None:
        return None
    profile = [json.loads(l)["candlewick_startup"] for l in (read_text(out, "startup-profile.txt") or "").splitlines()
               if l.startswith('{"candlewick_startup"')]
    diffusers = [r for r in (read(out, "anchor_diffusers_s.json") or {"results": []})["results"] if "load_s" in r]
    return {"candlewick": [json.loads(l) for l in text.splitlines() if l.startswith("{")],
            "candlewick_one_time_costs": profile, "diffusers": diffusers}


def main(out):
    gpu = open(os.path.join(out, "gpu.txt")).read().strip().split(", ") if os.path.exists(os.path.join(out, "gpu.txt")) else ["?", "?"]
    commit = open(os.path.join(out, "commit.txt")).read().strip() if os.path.exists(os.path.join(out, "commit.txt")) else None
    ours = read(out, "candlewick.json") or {"rows": [], "phases_ms": None}
    anchor = {"results": [r for name in ("anchor_diffusers_a.json", "anchor_diffusers_b.json", "anchor_diffusers.json")
                          for r in (read(out, name) or {"results": []})["results"]]}
    phases = read(out, "anchor_phases.json") or {}
    rows = []
    for r in ours["rows"]:
        rows.append({k: r.get(k) for k in ("system", "variant", "batch", "median_s", "min_s", "max_s", "images_per_s", "peak_gib",
                                           "process_peak_gib", "load_s", "first_call_s")})
    for r in anchor["results"]:
        if "median_s" in r:
            rows.append({"system": "diffusers", "variant": r["name"], "batch": r["batch"], "median_s": r["median_s"],
                         "min_s": r["min_s"], "max_s": r["max_s"], "images_per_s": r["img_per_s"],
                         "peak_gib": r["peak_gib"], "compile_s": r.get("compile_s")})
    fp32 = next((r["median_s"] for r in rows if r["system"] == "candlewick" and r["variant"] == "fp32" and r["batch"] == 1), None)
    for r in rows:
        if r["system"] == "candlewick" and fp32 and r["batch"] == 1:
            r["speedup_vs_fp32"] = fp32 / r["median_s"]
    parity = {}
    for name, key in (("parity-f32.json", "f32"), ("parity-f16-flash.json", "f16"), ("parity-f16-unfused.json", "f16_unfused"),
                      ("parity-f16-flash-eager.json", "f16_eager"),
                      ("parity-f16-flash-nchw.json", "f16_nchw"), ("parity-f16-flash-benchmarked.json", "f16_benchmarked")):
        p = read(out, name)
        if p:
            lat = p["parity"]["latents_max_abs_rel"]
            parity[f"{key}_latents_rel"] = lat[max(lat, key=lambda s: int(s.rsplit("_", 1)[1]))]
            parity[f"{key}_psnr_db"] = p["parity"]["image_psnr_db"]
    reference = read(out, "reference.json") or {}
    parity["diffusers_f16_latents_rel"] = reference.get("diffusers_f16_latents_rel")
    parity["diffusers_f16_psnr_db"] = reference.get("diffusers_f16_psnr_db")
    parity["steps"] = reference.get("steps")
    result = {
        "date": datetime.date.today().isoformat(), "device": gpu[0], "driver": gpu[1] if len(gpu) > 1 else None,
        "commit": commit,
        "work": {"model": "sd15-shaped-random", "width": 512, "height": 512, "steps": 50, "guidance": 7.5},
        "memory_note": "peak_gib: the most the tensors held during the warm-up and timed runs, weights included "
                       "(candlewick: pipe.gpuMemory().peakUsed, CUDA's memory-pool high-water mark; diffusers: "
                       "torch.cuda.max_memory_allocated); candlewick process_peak_gib: nvidia-smi's most for the whole "
                       "process (CUDA context and libraries included)",
        "rows": rows,
        "phases_ms": ours.get("phases_ms"),
        "diffusers_phases_ms": phases.get("phases_ms"),
        "attention": {"candlewick": read(out, "attention.json"), "pytorch_sdpa": phases.get("attention")},
        "parity": parity,
        "build_info": read_text(out, "build-info.txt"),
        "gpu_tests": test_summary(out),
        "leaks": read(out, "leaks.json"),
        "profile_ms": profile(out),
        "kernels": read(out, "kernels.json"),
        "startup": startup(out),
        "conv_layouts": read(out, "conv_layouts.json"),
        "rss_trace": [json.loads(l) for l in (read_text(out, "rss.txt") or "").splitlines() if l.startswith("{")] or None,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("%-11s %-48s %5s %9s %7s %8s" % ("system", "variant", "batch", "median_s", "img/s", "peakGiB"))
    for r in rows:
        print("%-11s %-48s %5d %9.3f %7.2f %8.2f" % (r["system"], r["variant"], r["batch"], r["median_s"],
                                                     r["images_per_s"], r["peak_gib"]))
    print(json.dumps(parity))


if __name__ == "__main__":
    main(sys.argv[1])
