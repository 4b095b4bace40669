//! The CLIP tokenizer of the tiny model (test/fixtures/tiny-sd/tokenizer, the real CLIP
//! vocabulary) on any text: exactly 77 ids from the start token, and decoding never fails on
//! the ids it produced or on arbitrary ids.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candlewick_core::tokenizer::ClipTokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test/fixtures/tiny-sd/tokenizer");
        ClipTokenizer::from_folder(&dir).unwrap_or_else(|e| panic!("the fixture tokenizer must load: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let tokenizer = tokenizer();
    let text = String::from_utf8_lossy(data);
    let encoded = tokenizer.encode(&text).unwrap_or_else(|e| panic!("encode failed on {text:?}: {e}"));
    assert_eq!(encoded.ids.len(), tokenizer.max_length());
    assert_eq!(encoded.ids[0], 49406, "starts with <|startoftext|>");
    let _ = tokenizer.decode(&encoded.ids).unwrap_or_else(|e| panic!("decode failed: {e}"));
    // Arbitrary ids, in range or not: an error at worst.
    let ids: Vec<u32> = data.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).collect();
    let _ = tokenizer.decode(&ids);
});
