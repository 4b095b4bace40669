//! The one conversion from the core's errors to JavaScript errors.
//!
//! A JS error made here has `message` = the core's message and `code` = [`candlewick_core::Error::code`]
//! (`ERR_CANDLEWICK_MODEL`, `ERR_CANDLEWICK_CANCELLED`, ...).

use std::panic::{catch_unwind, AssertUnwindSafe};

use candlewick_core::Error;
use napi::bindgen_prelude::{Env, JsError, Result, Status};

/// The `code` of a JS error: a core code, or a napi status name for failures inside napi itself.
/// napi-rs writes a `napi::Error<S>`'s `status.as_ref()` into the JS error's `code`.
#[derive(Debug, Clone)]
pub struct ErrorCode(String);

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for ErrorCode {
    fn from(status: Status) -> Self {
        ErrorCode(status.as_ref().to_string())
    }
}

/// A core error on its way to JavaScript. (The orphan rule forbids `From<core::Error> for napi::Error`
/// directly, so this newtype carries it: `result.map_err(CoreError)?`.)
#[derive(Debug)]
pub struct CoreError(pub Error);

impl From<CoreError> for napi::Error<ErrorCode> {
    fn from(CoreError(e): CoreError) -> Self {
        let message = match &e {
            Error::InvalidOption(message) | Error::OutOfMemory(message) | Error::NonFinite(message) => {
                in_js_spelling(message)
            }
            other => other.to_string(),
        };
        napi::Error::new(ErrorCode(e.code().to_string()), message)
    }
}

/// An option message in JavaScript's spelling: the core names options as diffusers does
/// (`scheduler.beta_end`, `num_inference_steps`) and quotes string values, so every unquoted
/// snake_case word is an option name and becomes camelCase (`scheduler.betaEnd`).
pub fn in_js_spelling(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    let mut upper_next = false;
    let mut chars = message.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '"' && prev != Some('\\') {
            quoted = !quoted;
        }
        let in_word = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
        let next_starts_word = chars.peek().is_some_and(|n| n.is_ascii_lowercase() || n.is_ascii_digit());
        if !quoted && c == '_' && in_word && next_starts_word {
            upper_next = true;
        } else if upper_next {
            out.push(c.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::in_js_spelling;

    #[test]
    fn option_names_are_camel_cased_and_quoted_values_kept() {
        assert_eq!(
            in_js_spelling(r#"Expected one of "linear", "scaled_linear" for scheduler.beta_schedule but received "sq_x""#),
            r#"Expected one of "linear", "scaled_linear" for scheduler.betaSchedule but received "sq_x""#
        );
        assert_eq!(
            in_js_spelling("Expected number above scheduler.beta_start (0.02) and below 1 for scheduler.beta_end but received 0.012"),
            "Expected number above scheduler.betaStart (0.02) and below 1 for scheduler.betaEnd but received 0.012"
        );
        assert_eq!(in_js_spelling("num_inference_steps, trained_betas[3]"), "numInferenceSteps, trainedBetas[3]");
    }
}

/// Build the JS error object now (on the JS thread) and wrap it in a plain `napi::Error` that
/// napi-rs throws or rejects with as it is, `code` included. For paths whose error type napi-rs
/// fixes to `napi::Error<Status>` (AsyncTask, `catch_unwind` functions).
pub fn into_js_error(env: &Env, e: CoreError) -> napi::Error {
    let typed: napi::Error<ErrorCode> = e.into();
    napi::Error::from(JsError::from(typed).into_unknown(*env))
}

/// Run an entry point's body, turning a panic into a JS error with code ERR_CANDLEWICK_INTERNAL.
/// The last line of defence: the core returns errors, and its pipeline thread catches panics in
/// jobs; `#[napi(catch_unwind)]` stays on entry points for napi-rs's own conversion code.
pub fn catch_panic<T>(env: &Env, body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|payload| Err(into_js_error(env, CoreError(Error::from_panic(payload)))))
}

/// The same for work off the JS thread (an AsyncTask's `compute`): the panic becomes the core's
/// [`Error::Internal`], which `resolve` turns into a JS error on the JS thread.
pub fn catch_panic_off_thread<T>(body: impl FnOnce() -> candlewick_core::Result<T>) -> candlewick_core::Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(Error::from_panic(payload)))
}
