"""ddim.json: diffusers' DDIMScheduler over a sweep of configs.

For each config: set_timesteps(n), then step() at the first, middle and last timestep on seeded 16-value tensors
(shape [1, 1, 4, 4], flattened in the JSON) with eta and, when eta > 0, an explicit variance_noise.
All steps use use_clipped_model_output=False (diffusers' default; the pipelines never set it) and
thresholding=False (thresholding is for pixel-space models, not Stable Diffusion).
"""

import json
import math

import torch
from diffusers import DDIMScheduler

from fixture_models import SD15_SCHEDULER

SD15 = SD15_SCHEDULER
LINEAR = dict(beta_schedule="linear")  # DDIMScheduler's own defaults: 0.0001..0.02, clip_sample, set_alpha_to_one
COS = dict(beta_schedule="squaredcos_cap_v2")
ZSNR_V = dict(SD15, rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")

# (name, config overrides, num_inference_steps, eta)
CASES = [
    ("sd15_50", SD15, 50, 0.0),
    ("sd15_1", SD15, 1, 0.0),
    ("sd15_3", SD15, 3, 0.0),
    ("sd15_7", SD15, 7, 0.0),
    ("sd15_13", SD15, 13, 0.0),
    ("sd15_999", SD15, 999, 0.0),
    # ("sd15_1000": leading spacing with steps_offset 1 and n = 1000 gives timestep 1000, out of range in diffusers)
    ("sd15_offset0_1000", dict(SD15, steps_offset=0), 1000, 0.0),
    ("sd15_50_eta0.5", SD15, 50, 0.5),
    ("sd15_13_eta1", SD15, 13, 1.0),
    ("sd15_set_alpha_to_one", dict(SD15, set_alpha_to_one=True), 50, 0.0),
    ("sd15_offset0", dict(SD15, steps_offset=0), 50, 0.0),
    ("sd15_trailing_3", dict(SD15, timestep_spacing="trailing"), 3, 0.0),
    ("sd15_trailing_50", dict(SD15, timestep_spacing="trailing"), 50, 0.0),
    ("sd15_trailing_1", dict(SD15, timestep_spacing="trailing"), 1, 0.0),
    ("sd15_trailing_999", dict(SD15, timestep_spacing="trailing"), 999, 0.0),
    ("sd15_trailing_1000", dict(SD15, timestep_spacing="trailing"), 1000, 0.0),
    ("sd15_linspace_50", dict(SD15, timestep_spacing="linspace"), 50, 0.0),
    ("sd15_linspace_7_offset0", dict(SD15, timestep_spacing="linspace", steps_offset=0), 7, 0.0),
    ("sd15_linspace_1", dict(SD15, timestep_spacing="linspace"), 1, 0.0),
    ("sd2_v_prediction_25", dict(SD15, prediction_type="v_prediction"), 25, 0.0),
    ("sd2_v_prediction_13_eta0.5", dict(SD15, prediction_type="v_prediction"), 13, 0.5),
    ("zero_snr_v_trailing_50", ZSNR_V, 50, 0.0),
    # eta 1 at the zero-SNR terminal timestep 999 gives NaN in diffusers (sqrt(1 - a_prev - std^2) of a
    # rounding-negative number), so this case uses eta 0.8.
    ("zero_snr_v_trailing_7_eta0.8", ZSNR_V, 7, 0.8),
    ("zero_snr_v_linspace_13_eta0.5", dict(ZSNR_V, timestep_spacing="linspace"), 13, 0.5),
    ("zero_snr_eps_leading_20", dict(SD15, rescale_betas_zero_snr=True), 20, 0.0),
    ("linear_defaults_50", LINEAR, 50, 0.0),
    ("linear_clip0.5_7", dict(LINEAR, clip_sample_range=0.5), 7, 0.0),
    ("linear_clip2_3_eta1", dict(LINEAR, clip_sample_range=2.0), 3, 1.0),
    ("linear_sample_pred_10", dict(LINEAR, prediction_type="sample"), 10, 0.0),
    ("linear_sample_pred_noclip_10_eta0.5", dict(LINEAR, prediction_type="sample", clip_sample=False), 10, 0.5),
    ("linear_500_train_steps_50", dict(LINEAR, num_train_timesteps=500, clip_sample=False), 50, 0.0),
    ("cosine_50", dict(COS, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 50, 0.0),
    ("cosine_trailing_13_eta1", dict(COS, clip_sample=False, timestep_spacing="trailing"), 13, 1.0),
    ("cosine_v_set_alpha_to_one_7", dict(COS, prediction_type="v_prediction", clip_sample=False), 7, 0.0),
    ("cosine_clip_linspace_3", dict(COS, timestep_spacing="linspace"), 3, 0.0),
]


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def _floats(t):
    values = [float(x) for x in t.flatten().tolist()]
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"non-finite value in ddim golden: {values}")
    return values


def make(path):
    out = []
    for index, (name, overrides, n, eta) in enumerate(CASES):
        sched = DDIMScheduler(**overrides)
        sched.set_timesteps(n)
        timesteps = [int(t) for t in sched.timesteps]
        g = torch.Generator().manual_seed(1000 + index)
        steps = []
        for i in sorted({0, len(timesteps) // 2, len(timesteps) - 1}):
            t = timesteps[i]
            sample = torch.randn(1, 1, 4, 4, generator=g)
            model_output = torch.randn(1, 1, 4, 4, generator=g)
            noise = torch.randn(1, 1, 4, 4, generator=g) if eta > 0 else None
            try:
                prev = sched.step(model_output, t, sample, eta=eta, use_clipped_model_output=False,
                                  variance_noise=noise).prev_sample
                prev_values = _floats(prev)
            except ValueError as e:
                raise SystemExit(f"ddim case {name} at timestep {t}: {e}")
            steps.append({
                "timestep": t,
                "sample": _floats(sample),
                "model_output": _floats(model_output),
                "variance_noise": _floats(noise) if noise is not None else None,
                "prev_sample": prev_values,
            })
        out.append({
            "name": name,
            # dict(scheduler.config) minus diffusers' bookkeeping key `_use_default_values` (a set: unordered)
            "config": {k: _jsonable(v) for k, v in dict(sched.config).items() if not k.startswith("_")},
            "num_inference_steps": n,
            "eta": eta,
            "use_clipped_model_output": False,
            "timesteps": timesteps,
            "alphas_cumprod_at_timesteps": [float(sched.alphas_cumprod[t]) for t in timesteps],
            "final_alpha_cumprod": float(sched.final_alpha_cumprod),
            "init_noise_sigma": float(sched.init_noise_sigma),
            "steps": steps,
        })
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=None)
        f.write("\n")
    print(f"ddim.json: {len(out)} configs")
