"""Per-UNet-step kernel times from two Nsight Compute CSV logs (bench/gpu/run.sh, PART=p).

    python3 bench/gpu/kernels.py ONE_STEP.csv THREE_STEPS.csv OUT.json

Each log holds gpu__time_duration of every kernel of one generate call (1 and 3 steps); the
difference of the two, halved, is what one UNet step (batch 2: guidance) launches (STEP_DIFF=1: logs of
1 and 2 steps, the difference not halved; SDXL's steps are long under the profiler). Kernels are
grouped by name and by kind (convolution, attention, GEMM, our fused kernels, candle's ops).
"""
import collections
import csv
import json
import os
import sys


def kernels(path):
    totals, counts = collections.Counter(), collections.Counter()
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"][:140]
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        totals[name] += value * {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}.get(unit, 1e-6)
        counts[name] += 1
    return totals, counts


KINDS = [  # first match wins
    ("convolution layout transform", ("nchwToNhwc", "nhwcToNchw", "nchwToFoldedNhwc", "foldedNhwcToNchw", "transpose_readWrite", "convertTensor", "tensorTransform")),
    ("attention", ("flash", "fmha", "sdpa", "attention")),
    ("convolution (cuDNN)", ("fprop", "xmma", "implicit_convolve", "cudnn", "cask_")),
    ("GEMM (cuBLAS)", ("nvjet", "gemm", "cublas")),
    ("our fused kernels", ("bias_add", "group_norm", "geglu", "transpose_", "conv_epilogue", "layer_norm")),
    ("candle copies", ("copy", "ucopy")),
    ("candle elementwise / reductions", ("affine", "badd", "bmul", "bsub", "bdiv", "usilu", "ugelu", "sum", "max", "min", "cast", "where", "fill", "uexp", "usqrt", "urecip", "uneg", "softmax", "layernorm", "rmsnorm", "index")),
]


def kind(name):
    low = name.lower()
    for label, keys in KINDS:
        if any(k.lower() in low for k in keys):
            return label
    return "other"


def main(one, three, out):
    t1, c1 = kernels(one)
    t3, c3 = kernels(three)
    names = set(t1) | set(t3)
    apart = 1 if os.environ.get("STEP_DIFF") == "1" else 2
    step = {n: ((t3[n] - t1[n]) / apart, (c3[n] - c1[n]) / apart) for n in names}
    step = {n: v for n, v in step.items() if v[1] > 0}
    by_kind = collections.Counter()
    launches = collections.Counter()
    for n, (ms, count) in step.items():
        by_kind[kind(n)] += ms
        launches[kind(n)] += count
    total = sum(ms for ms, _ in step.values())
    result = {
        "ms_per_step": total, "launches_per_step": sum(c for _, c in step.values()),
        "one_call_ms": {"1_step": sum(t1.values()), f"{1 + apart}_steps": sum(t3.values())},
        "by_kind": [{"kind": k, "ms": round(v, 4), "launches": launches[k]} for k, v in by_kind.most_common()],
        "top_kernels": [{"kernel": n, "ms": round(ms, 4), "launches": count}
                        for n, (ms, count) in sorted(step.items(), key=lambda kv: -kv[1][0])[:40]],
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"one UNet step (batch 2): {total:.2f} ms of kernel time in {result['launches_per_step']:.0f} launches")
    for row in result["by_kind"]:
        print(f"  {row['kind']:<34} {row['ms']:7.3f} ms  {row['launches']:5.0f} launches")
    for row in result["top_kernels"][:15]:
        print(f"  {row['ms']:7.3f} ms {row['launches']:4.0f}x  {row['kernel'][:100]}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
