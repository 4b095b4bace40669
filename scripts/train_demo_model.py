"""Trains the small text-to-image model that ships in the package (test/fixtures/shapes-sd): Stable Diffusion's
exact diffusers folder layout and components (CLIP tokenizer with the real vocabulary, CLIPTextModel,
UNet2DConditionModel with cross-attention, AutoencoderKL with 4 latent channels, DDIMScheduler with SD1.5's
config), trained from scratch on a synthetic dataset it draws itself (scripts/shapes_dataset.py): one shape in a
named colour on a named background at a named position and size, 64x64, e.g.
"a large red circle on a white background, top left".

Run on a GPU (a few minutes on one H200):

    pip install -r scripts/requirements-demo-model.txt
    python scripts/train_demo_model.py --out test/fixtures/shapes-sd [--sample-dir DIR]

Steps, all seeded (torch.manual_seed and explicit generators; GPU kernels are not bit-reproducible, so a rerun
gives a model of the same quality, not the same bytes):
  1. AutoencoderKL (block_out_channels (32, 32, 32): 64x64 <-> 4x16x16) trained alone on freshly drawn images
     (L1 + MSE + a small KL term); its scaling_factor set to 1 / std of the latents, as SD1's 0.18215 was.
  2. A pool of drawn samples encoded once to latents (the posterior's mode) and their captions tokenized.
  3. UNet2DConditionModel and CLIPTextModel trained jointly, from scratch: epsilon prediction on SD1.5's
     noise schedule, min-SNR-5 loss weighting, AdamW with warm-up and cosine decay, EMA of the weights (saved).
     Captions leave out each attribute with probability 0.15 and are empty with probability 0.1 (the
     unconditional case of classifier-free guidance).
  4. The folder written as StableDiffusionPipeline.save_pretrained writes it, with *.fp16.safetensors variants,
     the text encoder's keys under `text_model.` (SD1.5's layout), the tokenizer folder of
     scripts/fixture_tokenizer.py, and dataset.json (the vocabulary and colours the meaning tests measure with).
  5. With --sample-dir: a grid of sample images from diffusers' StableDiffusionPipeline on the written folder,
     and the share of samples whose measured colours, position and size match the prompt (the same
     measurement as test/meaning.test.ts), at guidance 1 and 7.5.

The token embedding rows of words that never occur in a caption are zero (they get no gradient and no weight
decay, so they stay zero): unknown words add nothing, and the 49408-row table compresses to almost nothing in
git and in the npm tarball.

The committed model: made on 2026-12-02 on one NVIDIA H200 (driver 580.159.04; torch 2.11.0+cu130, diffusers
0.42.1, transformers 5.17.0) by `python3 scripts/train_demo_model.py --out /tmp/shapes-sd --sample-dir $OUT` with
the defaults above; --max-minutes 4.5 ended the UNet training at step 3491 of the 8000-step schedule (77 ms a step
at batch 1024, launch-bound). VAE 65 s, UNet + text encoder 270 s, the whole script 342 s. To make it again:
`--stop-at 3491`. Its sampling check (diffusers, 64 random full captions, 20 DDIM steps): all four attributes
matched in 58/64 at guidance 7.5 and 30/64 at guidance 1. More in bench/NOTES.md ("shapes-sd").
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_models  # noqa: E402
import shapes_dataset as ds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 1234

SD15_SCHEDULER = fixture_models.SD15_SCHEDULER
TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, layer_norm_eps=1e-5,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)
UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 48, 48), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=(2, 3, 3),  # diffusers' quirk: heads per block (16 dims each)
            norm_num_groups=16)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
           up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
           sample_size=64)


def log(msg):
    print(msg, flush=True)


def write_tokenizer(out_dir):
    """The real CLIP vocabulary folder (scripts/fixture_tokenizer.py). Where open_clip (which holds the BPE file)
    is not installed, the same folder is copied from test/fixtures/tiny-sd/tokenizer, which that writer made."""
    try:
        import fixture_tokenizer
        fixture_tokenizer.write_tokenizer_folder(out_dir)
    except ImportError as e:
        log(f"tokenizer: {e}; copying test/fixtures/tiny-sd/tokenizer (written by fixture_tokenizer.py)")
        shutil.copytree(os.path.join(ROOT, "test", "fixtures", "tiny-sd", "tokenizer"), out_dir)


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_vae(vae, device, steps, batch, gen):
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3, 100)
        x = ds.render(ds.sample_attributes(batch, gen), device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=None)).sample
        kl = post.kl().mean() / (4 * 16 * 16)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"vae step {step:5d}  loss {loss.item():.5f}  kl {kl.item():.3f}  {time.time() - t0:.0f}s")
    vae.eval()
    with torch.no_grad():
        x = ds.render(ds.sample_attributes(512, gen), device)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        err = ((rec - x) * 127.5).abs()
        log(f"vae reconstruction: mean |error| {err.mean().item():.2f}/255, 99.9th percentile "
            f"{err.flatten().kthvalue(int(err.numel() * 0.999)).values.item():.1f}/255")


@torch.no_grad()
def encode_pool(vae, tokenizer, n, device, gen):
    attrs = ds.sample_attributes(n, gen)
    latents = []
    for i in range(0, n, 4096):
        part = {k: v[i:i + 4096] for k, v in attrs.items()}
        latents.append(vae.encode(ds.render(part, device)).latent_dist.mode())
    latents = torch.cat(latents)
    texts = ds.captions(attrs)
    unique = sorted(set(texts))
    ids = tokenizer(unique, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    row = {t: i for i, t in enumerate(unique)}
    input_ids = ids[torch.tensor([row[t] for t in texts])].to(device)
    log(f"pool: {n} samples, {len(unique)} distinct captions, e.g. {texts[:3]}")
    return latents, input_ids, ids


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "test", "fixtures", "shapes-sd"))
    p.add_argument("--sample-dir", default=None, help="write sample grids and adherence rates here")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--pool", type=int, default=200_000)
    p.add_argument("--stop-at", type=int, default=None,
                   help="end the UNet training after this step, the learning-rate schedule still planned over --steps")
    p.add_argument("--max-minutes", type=float, default=4.5, help="stop the UNet training early (said loudly) past this")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    import diffusers
    import transformers

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    t_start = time.time()
    gen = torch.Generator().manual_seed(SEED)

    tmp = tempfile.mkdtemp()
    write_tokenizer(os.path.join(tmp, "tokenizer"))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(tmp, "tokenizer"))

    torch.manual_seed(SEED)
    vae = AutoencoderKL(**VAE).to(device)
    train_vae(vae, device, args.vae_steps, args.vae_batch, gen)
    for q in vae.parameters():
        q.requires_grad_(False)

    latents, input_ids, unique_ids = encode_pool(vae, tokenizer, args.pool, device, gen)
    scaling = 1.0 / latents.std().item()
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log(f"latents: mean {latents.mean().item():.3f}, scaling_factor {scaling:.5f}")

    torch.manual_seed(SEED + 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT)).to(device)
    used = torch.unique(unique_ids)
    with torch.no_grad():
        emb = text_encoder.get_input_embeddings().weight
        keep = torch.zeros(emb.shape[0], dtype=torch.bool, device=device)
        keep[used.to(device)] = True
        emb[~keep] = 0
    log(f"text encoder: {len(used)} token ids occur in captions; the other rows of the embedding are zero")
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(**UNET).to(device)
    n_params = {k: sum(q.numel() for q in m.parameters()) for k, m in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae))}
    log(f"parameters: {n_params}")

    noise_sched = DDPMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if k not in ("steps_offset", "set_alpha_to_one")})
    alphas = noise_sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 for epsilon prediction

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = [q.detach().clone() for q in params]
    ema_decay = 0.999
    gdev = torch.Generator(device=device).manual_seed(SEED + 3)
    unet.train()
    text_encoder.train()
    t0 = time.time()
    stopped_early = None
    loss_sum = torch.zeros((), device=device)
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, 300)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(latents.shape[0], (args.batch,), device=device, generator=gdev)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, device=device, generator=gdev)
        t = torch.randint(0, 1000, (args.batch,), device=device, generator=gdev)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(input_ids[idx])[0]
        pred = unet(xt, t, cond).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [q.detach() for q in params], 1 - d)
        loss_sum += loss.detach()
        if (step + 1) % 500 == 0 or step == args.steps - 1:
            log(f"unet step {step + 1:6d}  mean loss {loss_sum.item() / ((step % 500) + 1):.4f}  lr {lr:.2e}  {time.time() - t0:.0f}s")
            loss_sum.zero_()
        if args.stop_at is not None and step + 1 >= args.stop_at:
            stopped_early = step + 1
            log(f"stopped at step {stopped_early} of a schedule over {args.steps} (--stop-at)")
            break
        if time.time() - t0 > args.max_minutes * 60:
            stopped_early = step + 1
            log(f"STOPPED EARLY at step {stopped_early} of {args.steps}: --max-minutes {args.max_minutes} reached")
            break
    train_s = time.time() - t0
    with torch.no_grad():
        for q, e in zip(params, ema):
            q.copy_(e)
    unet.eval()
    text_encoder.eval()
    log(f"unet + text encoder: {stopped_early or args.steps} steps in {train_s:.0f}s")

    # The folder, as make_fixtures.py writes tiny-sd.
    text_encoder, unet, vae = text_encoder.cpu().float(), unet.cpu().float(), vae.cpu().float()
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(os.path.join(out, "tokenizer"))
    write_tokenizer(os.path.join(out, "tokenizer"))
    half_dir = os.path.join(tmp, "fp16")
    for name, model in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        copy.deepcopy(model).half().save_pretrained(os.path.join(half_dir, name), safe_serialization=True, variant="fp16")
        for f in os.listdir(os.path.join(half_dir, name)):
            if f.endswith(".fp16.safetensors"):
                shutil.copy(os.path.join(half_dir, name, f), os.path.join(out, name, f))
    fixture_models.add_text_model_prefix(os.path.join(out, "text_encoder"))
    meta = ds.vocabulary()
    meta["training"] = {
        "seed": SEED, "vae_steps": args.vae_steps, "vae_batch": args.vae_batch, "steps": stopped_early or args.steps,
        "schedule_steps": args.steps, "batch": args.batch,
        "lr": args.lr, "pool": args.pool, "seconds": round(time.time() - t_start),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "parameters": n_params,
    }
    with open(os.path.join(out, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    log(f"wrote {out}: {size / 1e6:.2f} MB; total {time.time() - t_start:.0f}s")
    shutil.rmtree(tmp)

    if args.sample_dir:
        import sample_demo_model
        sample_demo_model.report(out, args.sample_dir, device)


if __name__ == "__main__":
    main()
