"""diffusers' side of the model families' speed rows (issue 18), run beside bench/gpu/bench.mjs in the same
call by bench/gpu/families.sh. ../shared/bench/anchor_diffusers.py does the same for SD1.5's shapes; this
sibling loads a model folder (bench/gpu/reference.py FAMILY=sdxl|sd2 makes random-weight ones) with
DiffusionPipeline, so the class comes from model_index.json as it does for users.

    python3 bench/gpu/anchor_families.py MODEL_DIR OUT.jsonl ROWS [--size N] [--steps N] [--guidance G]
        [--scheduler euler-a-trailing|trailing]

ROWS: comma-separated `eager:bN` (fp16, SDPA) and `compiled:bN` (fp16, SDPA, channels-last UNet compiled
with mode="reduce-overhead", fullgraph: anchor_diffusers.py's `compiled_ro`). Each row: one warm-up call
(the compile, for a compiled row's first batch size), then RUNS (default 3) timed calls from the prompt to
a numpy image on the host; the median; peak memory = torch.cuda.max_memory_allocated over the row.
"""
import argparse
import json
import os
import statistics
import time

import torch
from diffusers import DiffusionPipeline, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

PROMPT = "a photo of an astronaut riding a horse on mars"
RUNS = int(os.environ.get("RUNS", 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("rows")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--scheduler", default=None)
    a = ap.parse_args()
    pipe = DiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    if a.scheduler == "euler-a-trailing":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    elif a.scheduler == "trailing":
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing="trailing")
    compiled = False
    for row in a.rows.split(","):
        kind, batch = row.split(":b")
        batch = int(batch)
        if kind == "compiled" and not compiled:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
            compiled = True

        def call():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                pipe(prompt=[PROMPT] * batch, num_inference_steps=a.steps, guidance_scale=a.guidance,
                     width=a.size, height=a.size, output_type="np", generator=torch.Generator("cuda").manual_seed(1))
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        first = call()
        if kind == "compiled":
            call()  # reduce-overhead records its CUDA graphs on the calls after the compile
        times = [call() for _ in range(RUNS)]
        r = dict(system="diffusers", variant=f"fp16 + sdpa{' + torch.compile(reduce-overhead)' if kind == 'compiled' else ''}",
                 pipeline_class=type(pipe).__name__, batch=batch, steps=a.steps, size=a.size, guidance=a.guidance,
                 scheduler=type(pipe.scheduler).__name__, median_s=statistics.median(times), min_s=min(times),
                 max_s=max(times), images_per_s=batch / statistics.median(times), first_call_s=first,
                 peak_gib=torch.cuda.max_memory_allocated() / 2**30, torch=torch.__version__,
                 device=torch.cuda.get_device_name())
        print(json.dumps(r), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
