//! STUB (to be replaced): the napi binding.
