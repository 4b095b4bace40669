"""schedulers.json + schedulers.safetensors: every scheduler Candlewick implements, run by diffusers.

Run from the repository root (after `pip install -r scripts/requirements-fixtures.txt`):

    .venv/bin/python scripts/fixture_schedulers.py

For each case: `Class.from_config(base, **overrides)` (base: SD1.5's scheduler_config.json, the way a user
swaps the scheduler of a folder, or the class's own defaults), `set_timesteps(n)`, then a denoising loop on a
seeded [2, 2, 2, 2] sample: for each timestep, `scale_model_input`, a seeded stand-in for the UNet's output,
`step`. Recorded per UNet call: the scaled model input, the model output, every noise tensor the step drew
(diffusers' `randn_tensor`, patched to record; a Rust test replays them in order) and the step's prev_sample.
The JSON holds the merged config (`scheduler.config`, as diffusers resolved it), timesteps, sigmas where the
class has them, init_noise_sigma and order; the safetensors file holds the tensors as
`<case>.<call>.{model_input,model_output,prev_sample,noise<k>}` and `<case>.sample` (the initial sample).

crates/candlewick-core/tests/schedulers.rs checks Candlewick against these.
"""

import inspect
import math
import json
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_models import SD15_SCHEDULER  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDENS = os.path.join(ROOT, "test", "fixtures", "goldens")
SHAPE = (2, 2, 2, 2)

# SD1.5's scheduler/scheduler_config.json (a PNDMScheduler config): what `from_config` starts from when a user
# swaps the scheduler of an SD1.5 folder. Keys a class does not know (skip_prk_steps for Euler) are ignored.
SD15 = dict(SD15_SCHEDULER, skip_prk_steps=True)

# (name, diffusers class, base config (None: the class's defaults), overrides, num_inference_steps, step kwargs)
CASES = [
    ("ddim_sd15_20", "DDIMScheduler", SD15, {}, 20, {}),
    ("ddim_sd15_10_eta1", "DDIMScheduler", SD15, {}, 10, {"eta": 1.0}),
    # PNDM: SD1.5's own scheduler (skip_prk_steps: PLMS only, the second timestep twice: n + 1 calls).
    ("pndm_sd15_50", "PNDMScheduler", SD15, {}, 50, {}),
    ("pndm_sd15_2", "PNDMScheduler", SD15, {}, 2, {}),
    ("pndm_sd15_1", "PNDMScheduler", SD15, {}, 1, {}),
    ("pndm_sd15_trailing_7", "PNDMScheduler", SD15, {"timestep_spacing": "trailing"}, 7, {}),
    ("pndm_sd15_linspace_9", "PNDMScheduler", SD15, {"timestep_spacing": "linspace"}, 9, {}),
    ("pndm_sd15_v_alpha_one_20", "PNDMScheduler", SD15, {"prediction_type": "v_prediction", "set_alpha_to_one": True},
     20, {}),
    ("pndm_sd15_cosine_15", "PNDMScheduler", SD15, {"beta_schedule": "squaredcos_cap_v2", "steps_offset": 0}, 15, {}),
    # PNDM with its Runge-Kutta warm-up (12 PRK calls on the last 4 timesteps, then PLMS).
    ("pndm_prk_sd15_10", "PNDMScheduler", SD15, {"skip_prk_steps": False}, 10, {}),
    ("pndm_prk_defaults_4", "PNDMScheduler", None, {}, 4, {}),
    ("pndm_prk_sd15_trailing_25", "PNDMScheduler", SD15, {"skip_prk_steps": False, "timestep_spacing": "trailing"}, 25,
     {}),
    ("pndm_prk_sd15_linspace_v_6", "PNDMScheduler", SD15,
     {"skip_prk_steps": False, "timestep_spacing": "linspace", "prediction_type": "v_prediction"}, 6, {}),
    # DDPM: noise at every timestep above 0 (SD1.5's leading spacing ends on 1: noise at every step).
    ("ddpm_sd15_20", "DDPMScheduler", SD15, {}, 20, {}),
    ("ddpm_defaults_10", "DDPMScheduler", None, {}, 10, {}),
    ("ddpm_sd15_small_log_linspace_10", "DDPMScheduler", SD15,
     {"variance_type": "fixed_small_log", "timestep_spacing": "linspace"}, 10, {}),
    ("ddpm_sd15_large_trailing_v_12", "DDPMScheduler", SD15,
     {"variance_type": "fixed_large", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 12, {}),
    ("ddpm_sd15_sample_clip_8", "DDPMScheduler", SD15,
     {"prediction_type": "sample", "clip_sample": True, "clip_sample_range": 0.5}, 8, {}),
    ("ddpm_sd15_zero_snr_trailing_v_10", "DDPMScheduler", SD15,
     {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 10, {}),
    # LCM: its own timesteps, boundary scalings, fresh noise every step but the last.
    ("lcm_defaults_4", "LCMScheduler", None, {}, 4, {}),
    ("lcm_defaults_1", "LCMScheduler", None, {}, 1, {}),
    ("lcm_sd15_6", "LCMScheduler", SD15, {}, 6, {}),
    ("lcm_defaults_orig7_scaling3_3", "LCMScheduler", None, {"original_inference_steps": 7, "timestep_scaling": 3.0},
     3, {}),
    ("lcm_defaults_v_clip_8", "LCMScheduler", None,
     {"prediction_type": "v_prediction", "clip_sample": True, "clip_sample_range": 1.5}, 8, {}),
    ("lcm_defaults_sample_50", "LCMScheduler", None, {"prediction_type": "sample"}, 50, {}),
    # Euler: SD1.5's raw config (no timestep_spacing key: the class's linspace default), leading, trailing (61
    # steps: numpy's arange yields a 62nd timestep, -1, that diffusers runs), Karras / exponential / log-linear
    # sigmas, v_prediction and sample, final_sigmas_type, continuous timesteps (EDM-style v_prediction), zero
    # terminal SNR, sigma_min/sigma_max.
    ("euler_sd15_20", "EulerDiscreteScheduler", SD15, {}, 20, {}),
    ("euler_defaults_10", "EulerDiscreteScheduler", None, {}, 10, {}),
    ("euler_sd15_leading_20", "EulerDiscreteScheduler", SD15, {"timestep_spacing": "leading"}, 20, {}),
    ("euler_sd15_karras_25", "EulerDiscreteScheduler", SD15, {"use_karras_sigmas": True}, 25, {}),
    ("euler_sd15_karras_linspace_7", "EulerDiscreteScheduler", SD15,
     {"use_karras_sigmas": True, "timestep_spacing": "linspace"}, 7, {}),
    ("euler_sd15_trailing_vpred_15", "EulerDiscreteScheduler", SD15,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 15, {}),
    ("euler_defaults_trailing_61", "EulerDiscreteScheduler", None, {"timestep_spacing": "trailing"}, 61, {}),
    ("euler_sd15_linspace_sigma_min_12", "EulerDiscreteScheduler", SD15,
     {"timestep_spacing": "linspace", "final_sigmas_type": "sigma_min"}, 12, {}),
    ("euler_sd15_log_linear_10", "EulerDiscreteScheduler", SD15, {"interpolation_type": "log_linear"}, 10, {}),
    ("euler_sd15_exponential_sample_9", "EulerDiscreteScheduler", SD15,
     {"use_exponential_sigmas": True, "prediction_type": "sample"}, 9, {}),
    ("euler_sd15_continuous_vpred_karras_10", "EulerDiscreteScheduler", SD15,
     {"timestep_type": "continuous", "prediction_type": "v_prediction", "use_karras_sigmas": True,
      "sigma_min": 0.002, "sigma_max": 80.0, "timestep_spacing": "linspace"}, 10, {}),
    ("euler_zero_snr_trailing_vpred_8", "EulerDiscreteScheduler", SD15,
     {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 8, {}),
    ("euler_squaredcos_karras_sigma_min_6", "EulerDiscreteScheduler", None,
     {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, 6, {}),
    # Euler ancestral: fresh noise every step.
    ("euler_a_sd15_20", "EulerAncestralDiscreteScheduler", SD15, {}, 20, {}),
    ("euler_a_defaults_10", "EulerAncestralDiscreteScheduler", None, {}, 10, {}),
    ("euler_a_sd15_leading_15", "EulerAncestralDiscreteScheduler", SD15, {"timestep_spacing": "leading"}, 15, {}),
    # Zero terminal SNR with leading spacing: trailing starts at sigma 4096, where the ancestral step's
    # cancellation (a sample of size ~4096 stepped to one of size ~60) turns the last-ulp differences of
    # torch's float32 sqrt (an ulp off near rounding ties) in rescale_zero_terminal_snr into 1e-5 relative
    # errors.
    ("euler_a_zero_snr_leading_vpred_12", "EulerAncestralDiscreteScheduler", SD15,
     {"rescale_betas_zero_snr": True, "timestep_spacing": "leading", "prediction_type": "v_prediction"}, 12, {}),
    # Heun: two UNet calls a step (timesteps interleaved), Karras / exponential sigmas, clip_sample.
    ("heun_sd15_10", "HeunDiscreteScheduler", SD15, {}, 10, {}),
    ("heun_defaults_8", "HeunDiscreteScheduler", None, {}, 8, {}),
    ("heun_sd15_leading_9", "HeunDiscreteScheduler", SD15, {"timestep_spacing": "leading"}, 9, {}),
    ("heun_sd15_leading_karras_5", "HeunDiscreteScheduler", SD15,
     {"timestep_spacing": "leading", "use_karras_sigmas": True}, 5, {}),
    ("heun_sd15_karras_12", "HeunDiscreteScheduler", SD15, {"use_karras_sigmas": True}, 12, {}),
    ("heun_sd15_trailing_vpred_clip_7", "HeunDiscreteScheduler", SD15,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "clip_sample": True,
      "clip_sample_range": 0.5}, 7, {}),
    ("heun_sd15_exponential_sample_6", "HeunDiscreteScheduler", SD15,
     {"use_exponential_sigmas": True, "prediction_type": "sample", "timestep_spacing": "linspace"}, 6, {}),
    # DPMSolverMultistepScheduler: DPM++ 2M (N < 15: the last two steps lower order), Karras, SDE, orders 1-3,
    # heun, each spacing (SD1.5's config has none: linspace; leading's // (N + 1)), predictions, final sigmas, clipping.
    ("dpm_sd15_20", "DPMSolverMultistepScheduler", SD15, {}, 20, {}),
    ("dpm_sd15_10", "DPMSolverMultistepScheduler", SD15, {}, 10, {}),
    ("dpm_leading_sd15_20", "DPMSolverMultistepScheduler", SD15, {"timestep_spacing": "leading"}, 20, {}),
    ("dpm_leading_karras_sd15_12", "DPMSolverMultistepScheduler", SD15,
     {"timestep_spacing": "leading", "use_karras_sigmas": True}, 12, {}),
    ("dpm_karras_sd15_25", "DPMSolverMultistepScheduler", SD15, {"use_karras_sigmas": True}, 25, {}),
    ("dpm_karras_sd15_8", "DPMSolverMultistepScheduler", SD15, {"use_karras_sigmas": True}, 8, {}),
    ("dpm_sde_sd15_12", "DPMSolverMultistepScheduler", SD15, {"algorithm_type": "sde-dpmsolver++"}, 12, {}),
    ("dpm_sde_karras_sd15_20", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, 20, {}),
    ("dpm_order3_sd15_20", "DPMSolverMultistepScheduler", SD15, {"solver_order": 3}, 20, {}),
    ("dpm_order3_sd15_10", "DPMSolverMultistepScheduler", SD15, {"solver_order": 3}, 10, {}),
    ("dpm_order1_sd15_10", "DPMSolverMultistepScheduler", SD15, {"solver_order": 1}, 10, {}),
    ("dpm_heun_sd15_16", "DPMSolverMultistepScheduler", SD15, {"solver_type": "heun"}, 16, {}),
    ("dpm_sde_heun_sd15_10", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}, 10, {}),
    ("dpm_sde_order3_sd15_18", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, 18, {}),
    ("dpm_trailing_vpred_25", "DPMSolverMultistepScheduler", SD15,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 25, {}),
    ("dpm_linspace_sample_12", "DPMSolverMultistepScheduler", SD15,
     {"timestep_spacing": "linspace", "prediction_type": "sample"}, 12, {}),
    ("dpm_defaults_20", "DPMSolverMultistepScheduler", None, {}, 20, {}),
    ("dpm_sigma_min_euler_final_16", "DPMSolverMultistepScheduler", SD15,
     {"final_sigmas_type": "sigma_min", "euler_at_final": True}, 16, {}),
    ("dpm_sigma_min_16", "DPMSolverMultistepScheduler", SD15, {"final_sigmas_type": "sigma_min"}, 16, {}),
    ("dpm_sigma_min_no_lower_final_10", "DPMSolverMultistepScheduler", SD15,
     {"final_sigmas_type": "sigma_min", "lower_order_final": False, "solver_order": 3}, 10, {}),
    ("dpm_dpmsolver_12", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, 12, {}),
    ("dpm_dpmsolver_heun_order3_18", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3, "solver_type": "heun",
      "prediction_type": "v_prediction"}, 18, {}),
    ("dpm_sde_dpmsolver_12", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}, 12, {}),
    ("dpm_sde_dpmsolver_heun_16", "DPMSolverMultistepScheduler", SD15,
     {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min", "solver_type": "heun",
      "prediction_type": "sample"}, 16, {}),
    ("dpm_cosine_clipped_trailing_15", "DPMSolverMultistepScheduler", None,
     {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": "trailing"}, 15, {}),
    ("dpm_cosine_clipped_linspace_15", "DPMSolverMultistepScheduler", None,
     {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, 15, {}),
    ("dpm_lu_lambdas_sd15_20", "DPMSolverMultistepScheduler", SD15, {"use_lu_lambdas": True}, 20, {}),
    ("dpm_exponential_sd15_15", "DPMSolverMultistepScheduler", SD15, {"use_exponential_sigmas": True}, 15, {}),
    ("dpm_zero_snr_trailing_20", "DPMSolverMultistepScheduler", SD15,
     {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 20, {}),
    ("dpm_trailing_61", "DPMSolverMultistepScheduler", SD15, {"timestep_spacing": "trailing"}, 61, {}),
    # UniPCMultistepScheduler: bh2 / bh1, orders 1-3, the corrector (and disable_corrector), Karras, spacings.
    ("unipc_sd15_20", "UniPCMultistepScheduler", SD15, {}, 20, {}),
    ("unipc_sd15_8", "UniPCMultistepScheduler", SD15, {}, 8, {}),
    ("unipc_leading_sd15_20", "UniPCMultistepScheduler", SD15, {"timestep_spacing": "leading"}, 20, {}),
    ("unipc_karras_sd15_20", "UniPCMultistepScheduler", SD15, {"use_karras_sigmas": True}, 20, {}),
    ("unipc_order3_sd15_20", "UniPCMultistepScheduler", SD15, {"solver_order": 3}, 20, {}),
    ("unipc_order1_sd15_10", "UniPCMultistepScheduler", SD15, {"solver_order": 1}, 10, {}),
    ("unipc_bh1_order3_sigma_min_12", "UniPCMultistepScheduler", SD15,
     {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"}, 12, {}),
    ("unipc_disable_corrector_12", "UniPCMultistepScheduler", SD15, {"disable_corrector": [0, 5]}, 12, {}),
    ("unipc_no_lower_final_order3_10", "UniPCMultistepScheduler", SD15,
     {"lower_order_final": False, "solver_order": 3, "final_sigmas_type": "sigma_min"}, 10, {}),
    ("unipc_predict_eps_vpred_12", "UniPCMultistepScheduler", SD15,
     {"predict_x0": False, "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction", "solver_order": 3}, 12, {}),
    ("unipc_trailing_vpred_25", "UniPCMultistepScheduler", SD15,
     {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 25, {}),
    ("unipc_defaults_sample_15", "UniPCMultistepScheduler", None, {"prediction_type": "sample"}, 15, {}),
    ("unipc_karras_sigma_min_16", "UniPCMultistepScheduler", SD15,
     {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, 16, {}),
    ("unipc_karras_range_12", "UniPCMultistepScheduler", SD15,
     {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}, 12, {}),
    ("unipc_exponential_sd15_15", "UniPCMultistepScheduler", SD15, {"use_exponential_sigmas": True}, 15, {}),
    ("unipc_zero_snr_trailing_20", "UniPCMultistepScheduler", SD15,
     {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 20, {}),
]

# Whole 5-step pipelines on test/fixtures/tiny-sd with the scheduler swapped in
# (`Class.from_config(tiny_sd_scheduler_config, **overrides)`): (name, diffusers class, overrides). The tiny
# model's folder holds a DDIMScheduler config with SD1.5's betas. Deterministic schedulers only: the ones that draw
# noise each step are checked step by step above with diffusers' noise replayed.
PIPELINE_CASES = [
    ("ddim_trailing", "DDIMScheduler", {"timestep_spacing": "trailing"}),
    # SD1.5's own scheduler: PLMS, 5 steps = 6 UNet calls; and PNDM's Runge-Kutta warm-up: 14 calls.
    ("plms", "PNDMScheduler", {"skip_prk_steps": True}),
    ("pndm_prk", "PNDMScheduler", {"skip_prk_steps": False}),
    # Heun with Karras sigmas: two UNet calls a step at fractional timesteps, 5 steps = 9 calls.
    ("heun_karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
    # DPM++ 2M Karras (timesteps rounded from Karras sigmas, the last two steps lower order) and UniPC (its corrector
    # reusing the previous UNet output).
    ("dpm_2m_karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("unipc", "UniPCMultistepScheduler", {}),
]


def record_noise(module, log):
    """Patch `randn_tensor` in a scheduler's module so that every noise tensor it draws is logged (a module
    without it, PNDM's, draws none)."""
    if not hasattr(module, "randn_tensor"):
        return lambda: None
    original = module.randn_tensor

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        log.append(out.clone())
        return out

    module.randn_tensor = recording
    return lambda: setattr(module, "randn_tensor", original)


def jsonable(value):
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity: DPM-Solver's lambda_min_clipped=-inf is null (no clipping)
    return value


def record_add_noise(name, cls, base, overrides, steps, tensors):
    """img2img's start at strength 0.5, as StableDiffusionImg2ImgPipeline does it on a fresh scheduler:
    `set_begin_index(t_start * order)` where the class has it, then `add_noise` at `timesteps[t_start * order]`.
    Records `<case>.add_noise.{original,noise,noisy}`; returns the begin index (None: no step to start from)."""
    scheduler = cls.from_config(base, **overrides) if base is not None else cls(**overrides)
    scheduler.set_timesteps(steps)
    t_start = max(steps - min(int(steps * 0.5), steps), 0)
    begin = t_start * scheduler.order
    if begin >= len(scheduler.timesteps):
        return None  # no step left to start from (1 step at strength 0.5)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    g = torch.Generator().manual_seed(4321)
    original = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    noisy = scheduler.add_noise(original, noise, scheduler.timesteps[begin:begin + 1])
    tensors[f"{name}.add_noise.original"] = original
    tensors[f"{name}.add_noise.noise"] = noise
    tensors[f"{name}.add_noise.noisy"] = noisy.clone()
    return begin


def run_case(name, class_name, base, overrides, steps, step_kwargs, tensors):
    cls = getattr(diffusers, class_name)
    scheduler = cls.from_config(base, **overrides) if base is not None else cls(**overrides)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(1234)
    sample = torch.randn(SHAPE, generator=g, dtype=torch.float32) * scheduler.init_noise_sigma
    tensors[f"{name}.sample"] = sample.clone()
    module = sys.modules[cls.__module__]
    noise_log = []
    restore = record_noise(module, noise_log)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    step_generator = torch.Generator().manual_seed(99)
    calls = 0
    try:
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(sample, t)
            # A stand-in for the UNet: depends on its input (as a real model does) plus seeded noise.
            model_output = 0.5 * torch.tanh(model_input) + 0.3 * torch.randn(SHAPE, generator=g)
            noise_log.clear()
            kwargs = dict(step_kwargs)
            if takes_generator:
                kwargs["generator"] = step_generator
            out = scheduler.step(model_output, t, sample, **kwargs)
            prev = out.prev_sample if hasattr(out, "prev_sample") else out[0]
            assert torch.isfinite(prev).all(), f"{name}: diffusers' step {i} is not finite"
            tensors[f"{name}.{i}.model_input"] = model_input.clone()
            tensors[f"{name}.{i}.model_output"] = model_output.clone()
            tensors[f"{name}.{i}.prev_sample"] = prev.clone()
            for k, noise in enumerate(noise_log):
                tensors[f"{name}.{i}.noise{k}"] = noise.to(torch.float32).clone()
            sample = prev
            calls += 1
    finally:
        restore()
    add_noise_begin_index = record_add_noise(name, cls, base, overrides, steps, tensors)
    config = {k: jsonable(v) for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    sigmas = getattr(scheduler, "sigmas", None)
    return {
        "name": name,
        "class_name": class_name,
        "base": "sd15" if base is SD15 else ("class defaults" if base is None else "custom"),
        "overrides": overrides,
        "config": config,
        "num_inference_steps": steps,
        "step_kwargs": step_kwargs,
        "timesteps": [float(t) for t in scheduler.timesteps.tolist()],
        "sigmas": None if sigmas is None else [float(s) for s in sigmas.to(torch.float32).tolist()],
        "init_noise_sigma": float(scheduler.init_noise_sigma),
        "order": int(scheduler.order),
        "unet_calls": calls,
        "add_noise_begin_index": add_noise_begin_index,
    }


def make(goldens=GOLDENS):
    torch.set_num_threads(2)
    tensors = {}
    cases = [run_case(*case, tensors) for case in CASES]
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(goldens, "schedulers.safetensors"))
    with open(os.path.join(goldens, "schedulers.json"), "w", encoding="utf-8") as f:
        json.dump({
            "about": "scripts/fixture_schedulers.py: Class.from_config(base, **overrides), set_timesteps(n), then per "
                     "UNet call scale_model_input / stand-in model output / step; tensors in schedulers.safetensors",
            "diffusers_version": diffusers.__version__,
            "shape": list(SHAPE),
            "cases": cases,
        }, f, indent=1)
        f.write("\n")
    print(f"schedulers: {len(cases)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    make()
