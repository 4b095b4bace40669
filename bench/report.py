"""Writes bench/README.md (the speed table) and bench/chart.svg from the newest GPU result in
bench/results/ (written by bench/gpu/run.sh on the GPU test machine, copied here).

    python3 bench/report.py [bench/results/<date>-<card>.json]
"""
import glob
import html
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def newest_result():
    """The complete GPU result with the highest "run" number (runs are numbered in bench/NOTES.md;
    "partial" ones measured a few rows only)."""
    files = [f for f in glob.glob(os.path.join(HERE, "results", "*.json"))
             if "cpu" not in os.path.basename(f) and not json.load(open(f)).get("partial")]
    return max(files, key=lambda f: (json.load(open(f)).get("run", 0), f))


def chart(rows, path):
    """A horizontal bar chart of batch-1 latency, one bar a row, as a dependency-free SVG."""
    rows = [r for r in rows if r["batch"] == 1]
    width, bar_h, left, top = 760, 22, 330, 30
    longest = max(r["median_s"] for r in rows)
    scale = (width - left - 70) / longest
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + bar_h * len(rows) + 20}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="18" font-weight="bold">SD1.5 512x512, 50 DDIM steps, batch 1: seconds an image (lower is better)</text>']
    for i, r in enumerate(rows):
        y = top + i * bar_h
        color = "#e8772e" if r["system"] == "candlewick" else "#5b7bd5"
        label = html.escape(f'{r["system"]}: {r["variant"]}')
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{r["median_s"] * scale:.1f}" height="{bar_h - 6}" fill="{color}"/>')
        out.append(f'<text x="{left + r["median_s"] * scale + 4:.1f}" y="{y + 15}">{r["median_s"]:.3f}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main(path):
    result = json.load(open(path))
    rows = result["rows"]
    chart(rows, os.path.join(HERE, "chart.svg"))
    lines = [
        "# Benchmarks",
        "",
        "Made by `python3 bench/report.py` from the newest file in bench/results/, which bench/gpu/run.sh wrote on",
        "the GPU test machine (diffusers from ../shared/bench/anchor_diffusers.py in the same call, on the same card).",
        "Only ratios measured in one run count: eager frameworks are launch-bound and move with the host CPU.",
        "",
        f"**{result['device']}**, driver {result['driver']}, {result['date']}, commit `{(result.get('commit') or '?')[:10]}`: "
        f"SD1.5-shaped random weights, {result['work']['width']}x{result['work']['height']}, {result['work']['steps']} DDIM steps, "
        f"guidance {result['work']['guidance']} (the UNet runs at batch 2). File: `{os.path.relpath(path, HERE)}`.",
        "",
        "![seconds an image](chart.svg)",
        "",
        "| system | variant | batch | median s | images/s | speed-up vs candlewick fp32 | peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    fp32 = next((r["median_s"] for r in rows if r["system"] == "candlewick" and r["variant"] == "fp32" and r["batch"] == 1), None)
    for r in rows:
        speedup = f"x{fp32 / r['median_s']:.2f}" if fp32 and r["batch"] == 1 else ""
        lines.append(f"| {r['system']} | {r['variant']} | {r['batch']} | {r['median_s']:.3f} | {r['images_per_s']:.2f} | "
                     f"{speedup} | {r['peak_gib']:.2f} |")
    lines += ["", result.get("memory_note", ""), ""]
    if result.get("phases_ms"):
        p, d = result["phases_ms"], result.get("diffusers_phases_ms") or {}
        lines += ["## Where the time goes (every switch on, batch 1)", "",
                  "| phase | candlewick ms | diffusers ms (eager) |", "| --- | --- | --- |",
                  f"| text encoder (both prompts) | {p['text_encoder']:.1f} | {d.get('text_encoder_b2', float('nan')):.1f} |",
                  f"| UNet step (batch 2, with guidance and scheduler) | {p['unet_step']:.1f} | {d.get('unet_step_b2_eager', float('nan')):.1f} |",
                  f"| VAE decode (+ RGB8 on the host for candlewick) | {p['vae_decode']:.1f} | {d.get('vae_decode_b1_eager', float('nan')):.1f} |",
                  "", "The arithmetic floor (anchors.md): 2.0 ms a UNet step, about 105 ms an image.", ""]
    prof = result.get("profile_ms") or {}
    if prof.get("batch_1"):
        b1, b8 = prof["batch_1"], prof.get("batch_8") or {}
        lines += ["### By layer", "",
                  "`CANDLEWICK_PROFILE=1` (CUDA events around the layers, CUDA graphs off, so launch gaps count too; times",
                  "are inclusive: a resnet's includes its convolutions), one 50-step call, per UNet step (batch 2 / batch 16):", "",
                  "| part | batch 1: ms a step | calls a step | batch 8: ms a step |", "| --- | --- | --- | --- |"]
        for name, v in sorted(b1.items(), key=lambda kv: -kv[1]["ms"]):
            other = b8.get(name, {}).get("ms")
            lines.append(f"| {name} | {v['ms'] / 50:.2f} | {v['calls'] // 50} | {other / 50 if other else float('nan'):.2f} |")
        lines.append("")
    kernels, kernels_file = result.get("kernels"), path
    if not kernels:
        # The Nsight Compute profile runs in its own stage (PART=k): take the newest that has it.
        with_kernels = [f for f in glob.glob(os.path.join(HERE, "results", "*.json")) if json.load(open(f)).get("kernels")]
        if with_kernels:
            kernels_file = max(with_kernels, key=lambda f: (json.load(open(f)).get("run", 0), f))
            kernels = json.load(open(kernels_file))["kernels"]
    if kernels:
        device = json.load(open(kernels_file))["device"]
        lines += ["### By kernel", "",
                  f"From `{os.path.relpath(kernels_file, HERE)}` ({device}): Nsight Compute's `gpu__time_duration` of every",
                  "kernel of a 1-step and a 3-step call (CUDA graphs off), the difference halved: one UNet step at batch 2",
                  f"is **{kernels['ms_per_step']:.2f} ms** of kernel time in {kernels['launches_per_step']:.0f} launches, against the "
                  "2.0 ms arithmetic floor.", "",
                  "| kind | ms a step | launches |", "| --- | --- | --- |"]
        for k in kernels["by_kind"]:
            lines.append(f"| {k['kind']} | {k['ms']:.3f} | {k['launches']:.0f} |")
        lines += ["", "| kernel | ms a step | launches |", "| --- | --- | --- |"]
        for k in kernels["top_kernels"][:15]:
            lines.append(f"| `{k['kernel'][:90]}` | {k['ms']:.3f} | {k['launches']:.0f} |")
        lines.append("")
    if result.get("leaks") or result.get("gpu_tests"):
        lines += ["## GPU faults and leaks (test/gpu)", ""]
        tests = result.get("gpu_tests") or {}
        for name in tests.get("passed", []):
            lines.append(f"- passed: {name}")
        for name in tests.get("failed", []):
            lines.append(f"- **failed**: {name}")
        for note in tests.get("notes", []):
            lines.append(f"- {note}")
        leaks = result.get("leaks")
        if leaks:
            lines.append(f"- 200 generations against 10 ({leaks['call']['width']}x{leaks['call']['height']}, "
                         f"{leaks['call']['numInferenceSteps']} steps, {leaks['model']}): GPU memory in use "
                         f"{100 * leaks['gpu_used_delta']:+.2f}%, reserved {100 * leaks['gpu_reserved_delta']:+.2f}%, "
                         f"host RSS {100 * leaks['rss_delta']:+.2f}%")
        lines.append("")
    if result.get("parity"):
        lines += ["## Parity against diffusers f32 on the same card", "", "```json", json.dumps(result["parity"], indent=1), "```", ""]
    att, att_file = result.get("attention") or {}, path
    if not att.get("candlewick"):
        # The attention benchmark runs in a call of its own (PART=c): take the newest that has it.
        with_attention = [f for f in glob.glob(os.path.join(HERE, "results", "*.json"))
                          if (json.load(open(f)).get("attention") or {}).get("candlewick")]
        if with_attention:
            att_file = max(with_attention, key=lambda f: (json.load(open(f)).get("run", 0), f))
            att = json.load(open(att_file))["attention"]
    if att.get("candlewick"):
        sdpa = {(a["kind"], a["head_dim"], a["q_len"]): a for a in att.get("pytorch_sdpa") or []}
        other = json.load(open(att_file))
        lines += ["## Attention alone (f16, batch 2, 8 heads)", "",
                  f"From `{os.path.relpath(att_file, HERE)}` ({other['device']}): candlewick's FlashAttention-2 build has kernels for "
                  "head dims 64, 96, 128 and 160, so 40 runs on the 64 kernel and 80 on the 96 one; PyTorch SDPA measured in the same call.", "",
                  "| kind | head dim | queries | keys | candlewick flash ms | unfused ms | PyTorch SDPA ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for a in att["candlewick"]:
            s = sdpa.get((a["kind"], a["head_dim"], a["q_len"]), {})
            flash = f"{a['flash_ms']:.4f}" if a.get("flash_ms") is not None else "-"
            lines.append(f"| {a['kind']} | {a['head_dim']} | {a['q_len']} | {a['kv_len']} | {flash} | {a['unfused_ms']:.4f} | "
                         f"{s.get('ms', float('nan')):.4f} |")
        lines.append("")
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else newest_result())
