//! Activation functions named by diffusers' configs (`act_fn`, `time_embedding_act_fn`, ...),
//! after diffusers' `activations.py`.

use candle_core::{bail, Result, Tensor};

/// One of diffusers' `ACT2CLS` activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: x * sigmoid(x).
    Silu,
    /// `mish`: x * tanh(softplus(x)).
    Mish,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parse a config value; `field` names the config option in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        Ok(match value.to_lowercase().as_str() {
            "silu" | "swish" => Self::Silu,
            "mish" => Self::Mish,
            "gelu" => Self::Gelu,
            "relu" => Self::Relu,
            _ => bail!(
                "unsupported {field} {value:?} (expected one of \"silu\", \"swish\", \"mish\", \"gelu\", \"relu\")"
            ),
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => xs.silu(),
            Self::Mish => candle_nn::ops::mish(xs),
            Self::Gelu => xs.gelu_erf(),
            Self::Relu => xs.relu(),
        }
    }
}
