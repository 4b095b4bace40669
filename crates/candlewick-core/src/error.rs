//! One error type for the whole crate. Every message names the option or the file it is about.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied option is out of range or malformed. The message names the option,
    /// the value received and what is allowed.
    #[error("{0}")]
    InvalidOption(String),

    /// A model folder is incomplete or damaged: a missing file, a missing tensor, a wrong
    /// shape, a malformed config. `path` is the file concerned.
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },

    /// The caller asked for a device or dtype this build or machine cannot provide.
    #[error("{0}")]
    Device(String),

    /// Generation was cancelled between two denoising steps.
    #[error("generation was cancelled")]
    Cancelled,

    /// The pipeline was disposed; load the model again.
    #[error("the pipeline was disposed; load the model again to generate")]
    Disposed,

    /// The device ran out of memory during a call; the message says what was asked and what
    /// to lower. The pipeline stays usable.
    #[error("{0}")]
    OutOfMemory(String),

    /// A generation's numbers turned NaN or infinite (a black image otherwise); the message says
    /// where and what to lower.
    #[error("{0}")]
    NonFinite(String),

    /// A panic inside the pipeline, caught at the worker's boundary.
    #[error("internal error (a bug in candlewick, please report it): {0}")]
    Internal(String),

    /// A tensor operation failed (shape mismatch inside a model, out of memory, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// A stable, machine-readable code for the binding to expose (`err.code` in JS).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidOption(_) => "ERR_CANDLEWICK_INVALID_OPTION",
            Error::Model { .. } => "ERR_CANDLEWICK_MODEL",
            Error::Device(_) => "ERR_CANDLEWICK_DEVICE",
            Error::Cancelled => "ERR_CANDLEWICK_CANCELLED",
            Error::Disposed => "ERR_CANDLEWICK_DISPOSED",
            Error::Internal(_) => "ERR_CANDLEWICK_INTERNAL",
            Error::OutOfMemory(_) => "ERR_CANDLEWICK_OUT_OF_MEMORY",
            Error::NonFinite(_) => "ERR_CANDLEWICK_NON_FINITE",
            Error::Candle(e) if is_out_of_memory(e) => "ERR_CANDLEWICK_OUT_OF_MEMORY",
            Error::Candle(_) => "ERR_CANDLEWICK_TENSOR",
        }
    }

    /// A caught panic's payload as [`Error::Internal`] with the panic's message.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        // The payload may hold values whose Drop panics again; don't run it here.
        std::mem::forget(payload);
        Error::Internal(message)
    }

    pub fn invalid_option(message: impl Into<String>) -> Self {
        Error::InvalidOption(message.into())
    }

    pub fn model(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Model { path: path.into(), message: message.to_string() }
    }
}

pub(crate) fn is_out_of_memory(e: &candle_core::Error) -> bool {
    let text = e.to_string();
    text.contains("OUT_OF_MEMORY") || text.contains("out of memory")
}

/// sharp-style message: "Expected integer multiple of 8 for width but received 500".
///
/// Option paths are diffusers' snake_case names (`num_inference_steps`, `scheduler.beta_end`),
/// never quoted; values are quoted when they are strings (`{:?}`). A binding renders the message
/// in its language's spelling by converting the unquoted snake_case words (the Node binding:
/// `scheduler.betaEnd`).
pub fn expected(what: &str, option: &str, received: impl std::fmt::Display) -> Error {
    Error::InvalidOption(format!("Expected {what} for {option} but received {received}"))
}

/// `one of "a", "b", "c"`: the allowed values of a closed set, quoted.
pub fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("one of {}", quoted.join(", "))
}

/// "1 seed", "3 seeds".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
