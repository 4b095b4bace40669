//! diffusers' tensor names to the original Stable Diffusion (LDM) checkpoint's: the inverse of
//! diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
//! `convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint`
//! (diffusers/loaders/single_file_utils.py). Each function takes the name a diffusers model asks
//! for and gives where that tensor lies in the single file, so the file is read in place.

/// Where a diffusers tensor lies in a single-file checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub key: String,
    /// Rows `[start, start + len)` of the stored tensor (OpenCLIP's fused q/k/v projection).
    pub rows: Option<(usize, usize)>,
    /// Stored transposed (OpenCLIP's `text_projection`, applied as `x @ P` where diffusers'
    /// linear layer computes `x @ W^T`).
    pub transposed: bool,
}

impl Source {
    pub fn key(key: String) -> Self {
        Self { key, rows: None, transposed: false }
    }
}

/// The UNet's LDM block numbering: which `input_blocks` / `output_blocks` each diffusers block
/// starts at.
#[derive(Debug, Clone)]
pub struct UnetLayout {
    /// `input_blocks` index of each down block's first resnet.
    down_start: Vec<usize>,
    /// Resnets per down block (diffusers' `layers_per_block`).
    down_layers: Vec<usize>,
    /// `output_blocks` index of each up block's first resnet.
    up_start: Vec<usize>,
    /// Resnets per up block (`layers_per_block + 1`, reversed).
    up_layers: Vec<usize>,
    /// Whether each up block has attentions (its upsampler is then the layer's third module).
    up_attention: Vec<bool>,
}

impl UnetLayout {
    /// From the per-block `layers_per_block` and the up blocks' types.
    pub fn new(layers_per_block: &[usize], up_block_types: &[String]) -> Self {
        let mut down_start = Vec::new();
        let mut next = 1;
        for l in layers_per_block {
            down_start.push(next);
            next += l + 1;
        }
        let up_layers: Vec<usize> = layers_per_block.iter().rev().map(|l| l + 1).collect();
        let mut up_start = Vec::new();
        let mut next = 0;
        for l in &up_layers {
            up_start.push(next);
            next += l;
        }
        let up_attention = up_block_types.iter().map(|t| t.contains("CrossAttn")).collect();
        Self { down_start, down_layers: layers_per_block.to_vec(), up_start, up_layers, up_attention }
    }
}

/// Split `name` as `<head>.<index>.<rest>`.
fn indexed<'a>(name: &'a str, head: &str) -> Option<(usize, &'a str)> {
    let rest = name.strip_prefix(head)?.strip_prefix('.')?;
    let (index, rest) = rest.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// A UNet resnet's parameter names: diffusers' `ResnetBlock2D` to LDM's `ResBlock`.
fn unet_resnet(rest: &str) -> Option<String> {
    let (module, param) = rest.rsplit_once('.')?;
    let ldm = match module {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        _ => return None,
    };
    Some(format!("{ldm}.{param}"))
}

/// The UNet tensor `name` (diffusers) as its key under `model.diffusion_model.`.
pub fn unet_key(name: &str, layout: &UnetLayout) -> Option<String> {
    let top = |ldm: &str| name.split_once('.').map(|(_, param)| format!("{ldm}.{param}"));
    // SDXL's added conditions (`addition_embed_type: "text_time"`) are `label_emb.0` there.
    for (embedding, first, second) in
        [("time_embedding.", "time_embed.0", "time_embed.2"), ("add_embedding.", "label_emb.0.0", "label_emb.0.2")]
    {
        if let Some(rest) = name.strip_prefix(embedding) {
            let (module, param) = rest.split_once('.')?;
            let ldm = match module {
                "linear_1" => first,
                "linear_2" => second,
                _ => return None,
            };
            return Some(format!("{ldm}.{param}"));
        }
    }
    match name.split('.').next()? {
        "conv_in" => return top("input_blocks.0.0"),
        "conv_norm_out" => return top("out.0"),
        "conv_out" => return top("out.2"),
        _ => {}
    }
    if let Some((i, rest)) = indexed(name, "down_blocks") {
        let start = *layout.down_start.get(i)?;
        if let Some((j, rest)) = indexed(rest, "resnets") {
            return Some(format!("input_blocks.{}.0.{}", start + j, unet_resnet(rest)?));
        }
        if let Some((j, rest)) = indexed(rest, "attentions") {
            return Some(format!("input_blocks.{}.1.{rest}", start + j));
        }
        let rest = rest.strip_prefix("downsamplers.0.conv.")?;
        return Some(format!("input_blocks.{}.0.op.{rest}", start + layout.down_layers.get(i)?));
    }
    if let Some(rest) = name.strip_prefix("mid_block.") {
        if let Some((j, rest)) = indexed(rest, "resnets") {
            return Some(format!("middle_block.{}.{}", 2 * j, unet_resnet(rest)?));
        }
        let rest = rest.strip_prefix("attentions.0.")?;
        return Some(format!("middle_block.1.{rest}"));
    }
    let (i, rest) = indexed(name, "up_blocks")?;
    let start = *layout.up_start.get(i)?;
    if let Some((j, rest)) = indexed(rest, "resnets") {
        return Some(format!("output_blocks.{}.0.{}", start + j, unet_resnet(rest)?));
    }
    if let Some((j, rest)) = indexed(rest, "attentions") {
        return Some(format!("output_blocks.{}.1.{rest}", start + j));
    }
    let rest = rest.strip_prefix("upsamplers.0.conv.")?;
    let module = if *layout.up_attention.get(i)? { 2 } else { 1 };
    Some(format!("output_blocks.{}.{module}.conv.{rest}", start + layout.up_layers.get(i)? - 1))
}

/// A VAE resnet's or mid-block attention's parameter names.
fn vae_inner(rest: &str) -> String {
    let (module, param) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let ldm = match module {
        "conv_shortcut" => "nin_shortcut",
        "group_norm" => "norm",
        "to_q" => "q",
        "to_k" => "k",
        "to_v" => "v",
        "to_out.0" => "proj_out",
        other => other,
    };
    format!("{ldm}.{param}")
}

/// The VAE tensor `name` (diffusers) as its key under `first_stage_model.`; `num_blocks` is the
/// length of its `block_out_channels` (the decoder's blocks are numbered in reverse).
pub fn vae_key(name: &str, num_blocks: usize) -> Option<String> {
    let (part, rest) = name.split_once('.')?;
    if !matches!(part, "encoder" | "decoder") {
        return Some(name.to_string()); // quant_conv, post_quant_conv
    }
    if let Some(param) = rest.strip_prefix("conv_norm_out.") {
        return Some(format!("{part}.norm_out.{param}"));
    }
    if let Some(rest) = rest.strip_prefix("mid_block.") {
        if let Some((j, inner)) = indexed(rest, "resnets") {
            return Some(format!("{part}.mid.block_{}.{}", j + 1, vae_inner(inner)));
        }
        let inner = rest.strip_prefix("attentions.0.")?;
        return Some(format!("{part}.mid.attn_1.{}", vae_inner(inner)));
    }
    let (blocks, ldm_blocks, sampler, ldm_sampler) = match part {
        "encoder" => ("down_blocks", "down", "downsamplers.0.", "downsample."),
        _ => ("up_blocks", "up", "upsamplers.0.", "upsample."),
    };
    let Some((i, rest)) = indexed(rest, blocks) else {
        return Some(name.to_string()); // conv_in, conv_out
    };
    let i = if part == "decoder" { num_blocks.checked_sub(i + 1)? } else { i };
    if let Some((j, inner)) = indexed(rest, "resnets") {
        return Some(format!("{part}.{ldm_blocks}.{i}.block.{j}.{}", vae_inner(inner)));
    }
    let rest = rest.strip_prefix(sampler)?;
    Some(format!("{part}.{ldm_blocks}.{i}.{ldm_sampler}{rest}"))
}

/// The CLIP text encoder's tensor `name` (transformers' `CLIPTextModel`, `text_model.` first or
/// not) under `prefix` (`cond_stage_model.transformer.` in SD1.x files,
/// `conditioner.embedders.0.transformer.` in SDXL's), with `text_model.` as recent checkpoints
/// have it or without it as older ones do (diffusers' `convert_ldm_clip_checkpoint`).
pub fn clip_keys(name: &str, prefix: &str) -> Vec<Source> {
    let bare = name.strip_prefix("text_model.").unwrap_or(name);
    vec![Source::key(format!("{prefix}text_model.{bare}")), Source::key(format!("{prefix}{bare}"))]
}

/// The CLIP text encoder's tensor `name` in the OpenCLIP layout under `prefix`
/// (`cond_stage_model.model.` in SD2.x files; `conditioner.embedders.1.model.` for SDXL base's
/// `text_encoder_2`, `conditioner.embedders.0.model.` for the refiner's), as diffusers'
/// `convert_open_clip_checkpoint` reads it: q, k and v are rows of one fused `in_proj` (`hidden`,
/// the model width, rows each) and `text_projection.weight` is the stored `text_projection`
/// transposed.
pub fn open_clip_key(name: &str, hidden: usize, prefix: &str) -> Option<Source> {
    if name == "text_projection.weight" {
        return Some(Source { key: format!("{prefix}text_projection"), rows: None, transposed: true });
    }
    let bare = name.strip_prefix("text_model.").unwrap_or(name);
    let direct = match bare {
        "embeddings.token_embedding.weight" => Some("token_embedding.weight".to_string()),
        "embeddings.position_embedding.weight" => Some("positional_embedding".to_string()),
        _ => bare.strip_prefix("final_layer_norm.").map(|p| format!("ln_final.{p}")),
    };
    if let Some(key) = direct {
        return Some(Source::key(format!("{prefix}{key}")));
    }
    let (i, rest) = indexed(bare, "encoder.layers")?;
    let block = format!("{prefix}transformer.resblocks.{i}");
    let (module, param) = rest.rsplit_once('.')?;
    let fused = |n: usize| Source {
        key: format!("{block}.attn.in_proj_{param}"),
        rows: Some((n * hidden, hidden)),
        transposed: false,
    };
    Some(match module {
        "self_attn.q_proj" => fused(0),
        "self_attn.k_proj" => fused(1),
        "self_attn.v_proj" => fused(2),
        "self_attn.out_proj" => Source::key(format!("{block}.attn.out_proj.{param}")),
        "layer_norm1" => Source::key(format!("{block}.ln_1.{param}")),
        "layer_norm2" => Source::key(format!("{block}.ln_2.{param}")),
        "mlp.fc1" => Source::key(format!("{block}.mlp.c_fc.{param}")),
        "mlp.fc2" => Source::key(format!("{block}.mlp.c_proj.{param}")),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UnetLayout {
        let up: Vec<String> = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        UnetLayout::new(&[2, 2, 2, 2], &up)
    }

    // Pairs from diffusers' convert_ldm_unet_checkpoint on SD1.5's layout (LDM -> diffusers).
    #[test]
    fn sd15_unet_keys_match_diffusers_conversion() {
        let l = sd15();
        for (diffusers, ldm) in [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            ("down_blocks.0.resnets.1.conv2.weight", "input_blocks.2.0.out_layers.3.weight"),
            ("down_blocks.1.attentions.0.proj_in.weight", "input_blocks.4.1.proj_in.weight"),
            ("down_blocks.2.downsamplers.0.conv.bias", "input_blocks.9.0.op.bias"),
            ("down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"),
            ("mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"),
            (
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
            ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),
            ("up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"),
            ("up_blocks.3.attentions.2.proj_out.bias", "output_blocks.11.1.proj_out.bias"),
            ("conv_out.weight", "out.2.weight"),
        ] {
            assert_eq!(unet_key(diffusers, &l).as_deref(), Some(ldm), "{diffusers}");
        }
        assert_eq!(unet_key("down_blocks.7.resnets.0.conv1.weight", &l), None);
    }

    #[test]
    fn vae_keys_match_diffusers_conversion() {
        for (diffusers, ldm) in [
            ("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"),
            ("encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.down.0.downsample.conv.weight"),
            ("decoder.up_blocks.0.resnets.2.norm1.bias", "decoder.up.3.block.2.norm1.bias"),
            ("decoder.up_blocks.1.upsamplers.0.conv.bias", "decoder.up.2.upsample.conv.bias"),
            ("decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight"),
            ("encoder.mid_block.attentions.0.group_norm.weight", "encoder.mid.attn_1.norm.weight"),
            ("encoder.mid_block.resnets.1.conv2.weight", "encoder.mid.block_2.conv2.weight"),
            ("decoder.conv_norm_out.weight", "decoder.norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
            ("encoder.conv_in.bias", "encoder.conv_in.bias"),
        ] {
            assert_eq!(vae_key(diffusers, 4).as_deref(), Some(ldm), "{diffusers}");
        }
    }

    const SD2: &str = "cond_stage_model.model.";

    #[test]
    fn open_clip_splits_the_fused_projection() {
        let k = open_clip_key("text_model.encoder.layers.3.self_attn.k_proj.bias", 1024, SD2).unwrap();
        assert_eq!(k.key, "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_bias");
        assert_eq!(k.rows, Some((1024, 1024)));
        let p = open_clip_key("text_model.embeddings.position_embedding.weight", 1024, SD2).unwrap();
        assert_eq!(p.key, "cond_stage_model.model.positional_embedding");
        assert_eq!(
            open_clip_key("text_model.encoder.layers.0.mlp.fc2.weight", 8, SD2).unwrap().key,
            "cond_stage_model.model.transformer.resblocks.0.mlp.c_proj.weight"
        );
    }

    // SDXL (diffusers' convert_ldm_unet_checkpoint for `addition_embed_type: "text_time"`, and
    // convert_open_clip_checkpoint's text_projection, stored transposed).
    #[test]
    fn sdxl_added_conditions_and_text_projection() {
        let l = sd15();
        assert_eq!(unet_key("add_embedding.linear_1.weight", &l).as_deref(), Some("label_emb.0.0.weight"));
        assert_eq!(unet_key("add_embedding.linear_2.bias", &l).as_deref(), Some("label_emb.0.2.bias"));
        assert_eq!(unet_key("add_embedding.linear_3.bias", &l), None);
        let p = open_clip_key("text_projection.weight", 1280, "conditioner.embedders.1.model.").unwrap();
        assert_eq!(
            p,
            Source { key: "conditioner.embedders.1.model.text_projection".into(), rows: None, transposed: true }
        );
        let c = clip_keys("text_model.final_layer_norm.weight", "conditioner.embedders.0.transformer.");
        assert_eq!(c[0].key, "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight");
    }
}
