"""diffusers' side of the scheduler rows (bench/gpu/schedulers.mjs is candlewick's), on the GPU test
machine in the same call: the SD1.5-shaped model folder of bench/gpu/reference.py in fp16 with
PyTorch SDPA (diffusers' default), each row's scheduler class built with from_config over the
folder's scheduler config plus the row's fields, 512x512, batch 1, the row's steps and guidance,
prompt to image (text encoder + steps + VAE decode), median of RUNS runs after one warm-up.

    python3 bench/gpu/schedulers.py MODEL_DIR OUT.json
"""
import json
import os
import statistics
import subprocess
import sys
import time

import diffusers
import torch
from diffusers import StableDiffusionPipeline

model_dir, out_path = sys.argv[1:3]
RUNS = int(os.environ.get("RUNS", 3))
PROMPT = "a photo of an astronaut riding a horse on mars"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rows_js = subprocess.run(
    ["node", "--input-type=module", "-e",
     "import { SCHEDULER_ROWS } from './bench/gpu/schedulers-rows.mjs'; console.log(JSON.stringify(SCHEDULER_ROWS))"],
    cwd=ROOT, check=True, capture_output=True, text=True).stdout
ROWS = json.loads(rows_js)

pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float16, safety_checker=None,
                                               requires_safety_checker=False).to("cuda")
pipe.set_progress_bar_config(disable=True)
base_config = pipe.scheduler.config
results = []
for row in ROWS:
    cls_name, fields = row["diffusers"]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(base_config, **fields)

    def once():
        g = torch.Generator("cuda").manual_seed(1)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            pipe(PROMPT, num_inference_steps=row["steps"], guidance_scale=row["guidance"], height=512, width=512,
                 generator=g, output_type="np")
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()
    ts = [once() for _ in range(RUNS)]
    r = dict(system="diffusers fp16 + sdpa", scheduler=row["name"], cls=cls_name, steps=row["steps"],
             guidance=row["guidance"], median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts))
    results.append(r)
    print(json.dumps(r), flush=True)
with open(out_path, "w") as f:
    json.dump(dict(rows=results, torch=torch.__version__, diffusers=diffusers.__version__), f, indent=1)
