//! The text transformer of transformers' `CLIPTextModel`: token and position embeddings,
//! pre-norm encoder layers with causal self-attention, and `final_layer_norm`. It returns
//! `last_hidden_state`, which Stable Diffusion conditions on, or ([`ClipTextTransformer::encode`])
//! the hidden states at a layer counted from the end (diffusers' `clip_skip`, SDXL's penultimate
//! layer) and the pooled output; `CLIPTextModelWithProjection` (SDXL's second encoder) adds
//! `text_projection`.
//!
//! Weights load with or without the `text_model.` prefix (transformers 4 saves it, 5 does not).

use candle_core::{bail, Result, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};

use super::norm::{layer_norm, LayerNorm};
use serde::Deserialize;

use super::attention_processor::causal_scaled_dot_product;

/// text_encoder/config.json, with `CLIPTextConfig`'s defaults for missing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// "quick_gelu" (SD 1.x) or "gelu" (SD 2.x).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// `CLIPTextModelWithProjection`'s output width.
    pub projection_dim: usize,
    /// 2 (the legacy value most checkpoints carry): the pooled token is the one with the highest
    /// id; otherwise the first token equal to it.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            eos_token_id: 2,
        }
    }
}

/// CLIP's MLP activation.
#[derive(Debug, Clone, Copy)]
enum ClipActivation {
    /// x * sigmoid(1.702 x).
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

impl ClipActivation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
        }
    }
}

/// `CLIPAttention` with a causal mask.
#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, s, d) = xs.dims3()?;
        let split = |t: Tensor| t.reshape((b, s, self.heads, d / self.heads))?.transpose(1, 2);
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let out = causal_scaled_dot_product(&q, &k, &v)?;
        self.out_proj.forward(&out.transpose(1, 2)?.reshape((b, s, d))?)
    }
}

/// `CLIPEncoderLayer`: pre-norm self-attention and MLP, each residual.
#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig, act: ClipActivation) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(vb.pp("self_attn"), cfg)?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(cfg.intermediate_size, d, vb.pp("mlp").pp("fc2"))?,
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (self.self_attn.forward(&self.layer_norm1.forward(xs)?)? + xs)?;
        let h = self.act.forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?;
        self.fc2.forward(&h)? + xs
    }
}

/// The CLIP text transformer (transformers' `CLIPTextModel` without pooling).
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    max_positions: usize,
    eos_token_id: u32,
}

/// Which hidden states [`ClipTextTransformer::encode`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiddenLayer {
    /// 0: the last layer's output; 1: the penultimate layer's (transformers' `hidden_states[-2]`); ...
    pub from_end: usize,
    /// Apply `final_layer_norm` to them (diffusers' `clip_skip` in Stable Diffusion does; SDXL's
    /// penultimate states are taken without it).
    pub final_layer_norm: bool,
}

impl HiddenLayer {
    /// `last_hidden_state`: the last layer, normed.
    pub const LAST: HiddenLayer = HiddenLayer { from_end: 0, final_layer_norm: true };
}

/// What [`ClipTextTransformer::encode`] returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// [b, seq, hidden_size] at the requested layer.
    pub hidden: Tensor,
    /// transformers' `pooler_output`: `last_hidden_state` at each sequence's end token, [b, hidden_size]
    /// (None when the layers after the requested one were not run).
    pub pooled: Option<Tensor>,
}

impl ClipTextTransformer {
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let act = match cfg.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                bail!("unsupported hidden_act {other:?} (expected \"quick_gelu\" or \"gelu\")")
            }
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            bail!(
                "hidden_size ({}) is not a multiple of num_attention_heads ({})",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let vb =
            if vb.contains_tensor("text_model.embeddings.token_embedding.weight") { vb.pp("text_model") } else { vb };
        let emb = vb.pp("embeddings");
        let token_embedding = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding =
            candle_nn::embedding(cfg.max_position_embeddings, cfg.hidden_size, emb.pp("position_embedding"))?;
        let vb_layers = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(vb_layers.pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            max_positions: cfg.max_position_embeddings,
            eos_token_id: cfg.eos_token_id,
        })
    }

    /// The width of a token embedding (hidden_size).
    pub fn token_embedding_width(&self) -> usize {
        self.token_embedding.hidden_size()
    }

    /// The token embedding table [rows, hidden] (textual inversion's rows at its end).
    pub fn token_embedding_table(&self) -> &Tensor {
        self.token_embedding.embeddings()
    }

    /// Rows of the token embedding table.
    pub fn token_embedding_rows(&self) -> Result<usize> {
        self.token_embedding.embeddings().dim(0)
    }

    /// Textual inversion: `rows` [n, hidden] become the embeddings of ids `first..first + n`, the
    /// table cut or zero-extended to `first` rows before them (transformers'
    /// `resize_token_embeddings(len(tokenizer) + n)` then the rows set, as diffusers does).
    pub fn set_token_embeddings_from(&mut self, first: usize, rows: &Tensor) -> Result<()> {
        let table = self.token_embedding.embeddings();
        let (have, width) = table.dims2()?;
        let rows = rows.to_dtype(table.dtype())?.to_device(table.device())?;
        let mut pieces = vec![table.narrow(0, 0, have.min(first))?];
        if have < first {
            pieces.push(Tensor::zeros((first - have, width), table.dtype(), table.device())?);
        }
        pieces.push(rows);
        self.token_embedding = Embedding::new(Tensor::cat(&pieces, 0)?, width);
        Ok(())
    }

    /// `input_ids`: [b, seq] token ids (seq <= max_position_embeddings); returns
    /// last_hidden_state [b, seq, hidden_size] in the weights' dtype.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.encode(input_ids, HiddenLayer::LAST, false)?.hidden)
    }

    /// The number of encoder layers (`num_hidden_layers`).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The hidden states at `layer` and, with `pooled`, the pooled output (which runs every layer).
    pub fn encode(&self, input_ids: &Tensor, layer: HiddenLayer, pooled: bool) -> Result<ClipTextOutput> {
        let end_rows = if pooled { Some(self.end_rows(input_ids)?) } else { None };
        self.encode_pooling_at(input_ids, layer, end_rows.as_ref())
    }

    /// [`Self::encode`] with the pooled rows given ([`Self::end_rows`] of these ids): no host read
    /// of the ids, so that it can be captured in a CUDA graph.
    pub fn encode_pooling_at(
        &self,
        input_ids: &Tensor,
        layer: HiddenLayer,
        end_rows: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let pooled = end_rows.is_some();
        let (_, seq) = input_ids.dims2()?;
        if seq > self.max_positions {
            bail!("CLIP: {seq} tokens but max_position_embeddings is {}", self.max_positions);
        }
        let n = self.layers.len();
        if layer.from_end >= n {
            bail!("CLIP: hidden states {} layers from the end asked, but the encoder has {n} layers", layer.from_end);
        }
        let positions = Tensor::arange(0u32, seq as u32, input_ids.device())?;
        let tokens = self.token_embedding.forward(input_ids)?;
        let mut xs = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let stop = n - layer.from_end;
        let mut hidden = None;
        let last = if pooled { n } else { stop };
        for (i, l) in self.layers[..last].iter().enumerate() {
            xs = l.forward(&xs)?;
            if i + 1 == stop {
                hidden = Some(if layer.final_layer_norm { self.final_layer_norm.forward(&xs)? } else { xs.clone() });
            }
        }
        let hidden = match hidden {
            Some(h) => h,
            None => bail!("CLIP: no layer ran"),
        };
        let pooled = if pooled {
            let last_hidden_state = if stop == n && layer.final_layer_norm {
                hidden.clone()
            } else {
                self.final_layer_norm.forward(&xs)?
            };
            let (b, seq, width) = last_hidden_state.dims3()?;
            let rows = end_rows.expect("pooled");
            Some(last_hidden_state.reshape((b * seq, width))?.index_select(rows, 0)?)
        } else {
            None
        };
        Ok(ClipTextOutput { hidden, pooled })
    }

    /// transformers' pooling: each row's end token (the highest id when eos_token_id is the legacy
    /// 2, else the first `eos_token_id`) as a row of the flattened [b * seq] states, [b] u32 on the
    /// ids' device. Reads the ids on the host.
    pub fn end_rows(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids =
            input_ids.to_dtype(candle_core::DType::U32)?.to_device(&candle_core::Device::Cpu)?.to_vec2::<u32>()?;
        let mut rows = Vec::with_capacity(ids.len());
        for (b, row) in ids.iter().enumerate() {
            let position = if self.eos_token_id == 2 {
                // torch.argmax: the first of the largest.
                let max = row.iter().copied().max().unwrap_or(0);
                row.iter().position(|&id| id == max)
            } else {
                row.iter().position(|&id| id == self.eos_token_id)
            };
            let Some(p) = position else { bail!("CLIP: no end token in row {b}") };
            rows.push((b * row.len() + p) as u32);
        }
        Tensor::new(rows, input_ids.device())
    }
}

/// transformers' `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): the text transformer
/// and a bias-free `text_projection` of its pooled output (`text_embeds`).
#[derive(Debug, Clone)]
pub struct ClipTextModelWithProjection {
    pub text_model: ClipTextTransformer,
    text_projection: Linear,
}

impl ClipTextModelWithProjection {
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let text_model = ClipTextTransformer::new(vb.clone(), cfg)?;
        let text_projection = candle_nn::linear_no_bias(cfg.hidden_size, cfg.projection_dim, vb.pp("text_projection"))?;
        Ok(Self { text_model, text_projection })
    }

    /// `projection_dim`: the width of `text_embeds`.
    pub fn projection_dim(&self) -> usize {
        self.text_projection.weight().dims()[0]
    }

    /// The hidden states at `layer` and `text_embeds` [b, projection_dim].
    pub fn encode(&self, input_ids: &Tensor, layer: HiddenLayer) -> Result<(Tensor, Tensor)> {
        self.encode_pooling_at(input_ids, &self.text_model.end_rows(input_ids)?, layer)
    }

    /// [`Self::encode`] with the pooled rows given (`ClipTextTransformer::end_rows`): graph-capturable.
    pub fn encode_pooling_at(
        &self,
        input_ids: &Tensor,
        end_rows: &Tensor,
        layer: HiddenLayer,
    ) -> Result<(Tensor, Tensor)> {
        let out = self.text_model.encode_pooling_at(input_ids, layer, Some(end_rows))?;
        let Some(pooled) = out.pooled else { bail!("CLIP: no pooled output") };
        Ok((out.hidden, self.text_projection.forward(&pooled)?))
    }
}
