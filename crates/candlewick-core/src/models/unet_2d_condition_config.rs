//! unet/config.json of diffusers' `UNet2DConditionModel`: the serde mirror with diffusers'
//! defaults, and the check that refuses by name what candlewick's UNet does not implement.

use candle_core::{bail, Result};
use serde::Deserialize;

/// A config value diffusers accepts either once for all blocks or once per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    // Lists first, so that a nested `PerBlock<PerBlock<_>>` reads `[1, 2]` as one per block.
    Each(Vec<T>),
    One(T),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// One value per block; a list must have exactly `n` entries.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Ok(v.clone()),
            Self::Each(v) => bail!("{field} has {} entries ({v:?}) but {n} are needed", v.len()),
        }
    }
}

/// unet/config.json, with `UNet2DConditionModel.__init__`'s defaults for missing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    /// Latent height and width the model was trained at (required by the pipeline).
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<usize>,
    /// An int, one per down block, or one list per down block (transformers per resnet).
    pub transformer_layers_per_block: PerBlock<PerBlock<usize>>,
    pub reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    /// For SD 1.x/2.x configs this is really the number of heads (diffusers' naming quirk).
    pub attention_head_dim: PerBlock<usize>,
    /// The number of heads; when absent, `attention_head_dim` is used as diffusers does.
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    /// In f16, compute attention scores in f32 (the softmax always runs in f32).
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    /// "text_time" (SDXL): `add_embedding` of the pooled text and the size conditions.
    pub addition_embed_type: Option<String>,
    /// Channels of each size condition's sinusoidal embedding (SDXL: 256).
    pub addition_time_embed_dim: Option<usize>,
    /// `add_embedding`'s input: the pooled text embedding plus 6 (5 for the refiner) size
    /// conditions of `addition_time_embed_dim` each.
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// LCM: the width of the guidance-scale embedding `time_embedding.cond_proj` reads.
    pub time_cond_proj_dim: Option<usize>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    pub attention_type: String,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Self {
            sample_size: 0,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: s(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: s(&["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(PerBlock::One(1)),
            reverse_transformer_layers_per_block: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            time_cond_proj_dim: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_type: "default".into(),
        }
    }
}

/// Whether a block type name (after diffusers' "UNetRes" prefix strip) has cross-attention.
pub(super) fn block_kind(field: &str, i: usize, name: &str, plain: &str, cross: &str) -> Result<bool> {
    let name = name.strip_prefix("UNetRes").unwrap_or(name);
    if name == plain {
        Ok(false)
    } else if name == cross {
        Ok(true)
    } else {
        bail!("unsupported {field}[{i}] {name:?}: candlewick's UNet supports {plain:?} and {cross:?}")
    }
}

impl UNet2DConditionConfig {
    /// Refuse what this UNet does not implement, naming the option and value.
    pub(super) fn check_supported(&self) -> Result<()> {
        let named = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}"));
        let addition = self.addition_embed_type.as_ref().filter(|t| t.as_str() != "text_time");
        for (field, value) in [
            ("class_embed_type", named(&self.class_embed_type)),
            ("addition_embed_type", addition.map(|v| format!("{v:?} (candlewick supports \"text_time\")"))),
            ("encoder_hid_dim_type", named(&self.encoder_hid_dim_type)),
            ("num_class_embeds", self.num_class_embeds.map(|n| n.to_string())),
            ("encoder_hid_dim", self.encoder_hid_dim.map(|n| n.to_string())),
        ] {
            if let Some(v) = value {
                bail!("unsupported {field} {v}: candlewick's UNet has no {field} (class-conditioned UNets are not supported)");
            }
        }
        if self.addition_embed_type.is_some()
            && (self.addition_time_embed_dim.is_none() || self.projection_class_embeddings_input_dim.is_none())
        {
            bail!("addition_embed_type \"text_time\" needs addition_time_embed_dim and projection_class_embeddings_input_dim");
        }
        if self.dual_cross_attention {
            bail!("unsupported dual_cross_attention true (DualTransformer2DModel is not supported)");
        }
        if self.time_embedding_type != "positional" {
            bail!("unsupported time_embedding_type {:?} (expected \"positional\")", self.time_embedding_type);
        }
        if self.attention_type != "default" {
            bail!("unsupported attention_type {:?} (expected \"default\")", self.attention_type);
        }
        let n = self.down_block_types.len();
        if n == 0 || self.up_block_types.len() != n || self.block_out_channels.len() != n {
            bail!(
                "down_block_types ({n}), up_block_types ({}) and block_out_channels ({}) must have the same, non-zero length",
                self.up_block_types.len(),
                self.block_out_channels.len()
            );
        }
        Ok(())
    }
}
