//! The one conversion from the core's errors to JavaScript errors.
//!
//! A JS error made here has `message` = the core's message and `code` = [`candlewick_core::Error::code`]
//! (`ERR_CANDLEWICK_MODEL`, `ERR_CANDLEWICK_CANCELLED`, ...).

use candlewick_core::Error;
use napi::bindgen_prelude::{Env, JsError, Status};

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
        napi::Error::new(ErrorCode(e.code().to_string()), e.to_string())
    }
}

/// Build the JS error object now (on the JS thread) and wrap it in a plain `napi::Error` that
/// napi-rs throws or rejects with as it is, `code` included. For paths whose error type napi-rs
/// fixes to `napi::Error<Status>` (AsyncTask, `catch_unwind` functions).
pub fn into_js_error(env: &Env, e: CoreError) -> napi::Error {
    let typed: napi::Error<ErrorCode> = e.into();
    napi::Error::from(JsError::from(typed).into_unknown(*env))
}
