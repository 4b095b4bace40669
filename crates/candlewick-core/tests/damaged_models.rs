//! Damaged copies of the tiny model (test/fixtures/tiny-sd, made by scripts/make_fixtures.py):
//! every kind of damage is an error that names the file and says what is wrong; none panics, and
//! none allocates from a number in a header (a header length of 2^64 - 1 is refused at once).
//! Safetensors files with damaged headers are written byte by byte here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use candlewick_core::device::{DTypeRequest, DeviceRequest};
use candlewick_core::pipeline::{LoadOptions, StableDiffusionPipeline};
use candlewick_core::weights::SafetensorsFile;
use candlewick_core::Error;
use safetensors::{Dtype, SafeTensors};

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

/// A scratch copy of tiny-sd without the fp16 variants; removed when dropped.
struct Copy {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Copy {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("tiny-sd");
        copy_dir(&common::fixtures().join("tiny-sd"), &root);
        Copy { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        fs::write(self.path(rel), bytes).expect("write");
    }

    /// Load it on the CPU in f32 and return the error (failing the test if it loads).
    fn load_error(&self) -> Error {
        let options = LoadOptions { device: DeviceRequest::Cpu, dtype: DTypeRequest::F32, ..Default::default() };
        match StableDiffusionPipeline::load(&self.root, &options) {
            Ok(_) => panic!("the damaged model loaded"),
            Err(e) => e,
        }
    }

    /// The error's message, after checking that it is a model error naming `rel`.
    fn load_error_naming(&self, rel: &str) -> String {
        let error = self.load_error();
        let message = error.to_string();
        assert_eq!(error.code(), "ERR_CANDLEWICK_MODEL", "{message}");
        let named = format!("{}: ", self.path(rel).display());
        assert!(message.starts_with(&named), "{message:?} should start with {named:?}");
        message[named.len()..].to_string()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else if !name.ends_with(".fp16.safetensors") {
            fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

/// One tensor of a safetensors file: name, dtype as written in the header, shape, bytes.
#[derive(Clone)]
struct Entry {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The tensors of a safetensors file, in file order.
fn entries(path: &Path) -> Vec<Entry> {
    let bytes = fs::read(path).expect("read weights");
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let (_, metadata) = SafeTensors::read_metadata(&bytes).expect("fixture header");
    metadata
        .offset_keys()
        .into_iter()
        .map(|name| {
            let view = st.tensor(&name).expect("tensor");
            let dtype = match view.dtype() {
                Dtype::F32 => "F32",
                Dtype::F16 => "F16",
                other => panic!("unexpected fixture dtype {other:?}"),
            };
            Entry { dtype, shape: view.shape().to_vec(), data: view.data().to_vec(), name }
        })
        .collect()
}

/// The bytes of a safetensors file: the header length, `header` as given, then `data`.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A well-formed file of `entries`, back to back.
fn file_of(entries: &[Entry]) -> Vec<u8> {
    let mut fields = Vec::new();
    let mut data = Vec::new();
    for e in entries {
        let start = data.len();
        data.extend_from_slice(&e.data);
        fields.push(format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{start},{}]}}",
            e.name,
            e.dtype,
            e.shape,
            data.len()
        ));
    }
    raw_file(&format!("{{{}}}", fields.join(",")), &data)
}

/// 16 bytes of data and a header for one F32 tensor `a` of shape [4] at `offsets`.
fn one_tensor(shape: &str, offsets: &str) -> Vec<u8> {
    raw_file(&format!("{{\"a\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":{offsets}}}}}"), &[0; 16])
}

#[test]
fn truncated_weights_say_how_many_bytes_are_missing() {
    let m = Copy::new();
    let full = fs::read(m.path(UNET)).unwrap();
    m.write(UNET, &full[..full.len() / 2]);
    let message = m.load_error_naming(UNET);
    assert!(message.starts_with("is truncated: its header describes "), "{message}");
    assert!(message.contains("bytes of tensor data but only "), "{message}");
}

#[test]
fn files_shorter_than_the_length_prefix() {
    for len in [0, 4, 7] {
        let m = Copy::new();
        m.write(UNET, vec![0u8; len]);
        assert_eq!(
            m.load_error_naming(UNET),
            format!("is not a safetensors file: it has {len} bytes, fewer than the 8 that give the header's length")
        );
    }
}

#[test]
fn header_lengths_past_the_file_or_the_limit_are_refused_without_allocating() {
    let m = Copy::new();
    let mut bytes = fs::read(m.path(UNET)).unwrap();
    let file_len = bytes.len();
    // Just past the end of the file.
    bytes[..8].copy_from_slice(&(file_len as u64 - 7).to_le_bytes());
    m.write(UNET, &bytes);
    assert_eq!(
        m.load_error_naming(UNET),
        format!(
            "is truncated or not a safetensors file: its header length ({} bytes) goes past the end of the file ({file_len} bytes)",
            file_len - 7
        )
    );
    // Absurd lengths: refused before any read or allocation of that size (this test would abort
    // with an allocation failure otherwise).
    for n in [u64::MAX, 1 << 40, 100_000_001] {
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        m.write(UNET, &bytes);
        assert_eq!(
            m.load_error_naming(UNET),
            format!(
                "is not a valid safetensors file: its header length is {n} bytes, over safetensors' limit of 100000000"
            )
        );
    }
}

#[test]
fn malformed_headers() {
    let cases: [(&[u8], &str); 3] = [
        (
            b"{not json",
            "has a malformed safetensors header: invalid JSON in header: key must be a string at line 1 column 2",
        ),
        (b"\xff\xfe{}", "has a malformed safetensors header: invalid UTF-8 in header:"),
        (b"[1, 2]", "has a malformed safetensors header: invalid JSON in header: invalid type: sequence"),
    ];
    for (header, expected) in cases {
        let m = Copy::new();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        m.write(UNET, &bytes);
        let message = m.load_error_naming(UNET);
        assert!(message.starts_with(expected), "{message:?} should start with {expected:?}");
    }
}

#[test]
fn tensor_offsets_out_of_range_overlapping_or_not_matching_the_shape() {
    let m = Copy::new();
    let cases = [
        // Ends past the data: the span no longer matches the shape.
        (one_tensor("[4]", "[0,1000]"), "tensor a: shape [4] of F32 takes 16 bytes but its data_offsets [0, 1000] span 1000"),
        // Starts after its end.
        (one_tensor("[4]", "[16,0]"), "tensor a: its data_offsets overlap another tensor's or leave a gap (safetensors stores tensors back to back from 0)"),
        // Consistent with the shape but past the end of the file.
        (one_tensor("[8]", "[0,32]"), "is truncated: its header describes 32 bytes of tensor data but only 16 follow the header"),
        // Bytes left over after the last tensor.
        (one_tensor("[2]", "[0,8]"), "has 8 bytes after the last tensor's data (the header describes 8 bytes, 16 follow it)"),
        // A shape whose size overflows.
        (one_tensor("[4294967296,4294967296,4294967296]", "[0,16]"), "is not a valid safetensors file: a tensor's shape is too large (its size overflows)"),
        (
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
            "tensor b: its data_offsets overlap another tensor's or leave a gap (safetensors stores tensors back to back from 0)",
        ),
        (
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#,
                &[0; 16],
            ),
            "tensor b: its data_offsets overlap another tensor's or leave a gap (safetensors stores tensors back to back from 0)",
        ),
    ];
    for (bytes, expected) in cases {
        m.write(UNET, &bytes);
        assert_eq!(m.load_error_naming(UNET), expected);
    }
}

#[test]
fn an_integer_weight_is_an_error_not_a_silent_cast() {
    let m = Copy::new();
    let mut tensors = entries(&m.path(UNET));
    let conv = tensors.iter_mut().find(|e| e.name == "conv_in.weight").expect("conv_in.weight");
    conv.dtype = "I32"; // same byte size as F32, so only the dtype is wrong
    m.write(UNET, file_of(&tensors));
    assert_eq!(
        m.load_error_naming(UNET),
        "tensor conv_in.weight is stored as I32; model weights must be F32, F16, BF16 or F64 (an integer tensor is not converted)"
    );
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() {
    let m = Copy::new();
    let mut tensors = entries(&m.path(UNET));
    let conv = tensors.iter_mut().find(|e| e.name == "conv_in.weight").expect("conv_in.weight");
    let expected = conv.shape.clone();
    conv.shape = vec![expected.iter().product::<usize>()];
    m.write(UNET, file_of(&tensors));
    assert_eq!(
        m.load_error_naming(UNET),
        format!(
            "shape mismatch for conv_in.weight, expected: {:?}, got: [{}]",
            expected,
            expected.iter().product::<usize>()
        )
    );
}

#[test]
fn a_missing_tensor_is_named() {
    for (rel, missing) in
        [(UNET, "conv_in.bias"), ("vae/diffusion_pytorch_model.safetensors", "decoder.conv_out.weight")]
    {
        let m = Copy::new();
        let tensors: Vec<Entry> = entries(&m.path(rel)).into_iter().filter(|e| e.name != missing).collect();
        m.write(rel, file_of(&tensors));
        assert_eq!(m.load_error_naming(rel), format!("cannot find tensor {missing}"));
    }
}

#[test]
fn a_missing_weights_file() {
    let m = Copy::new();
    fs::remove_file(m.path("text_encoder/model.safetensors")).unwrap();
    assert_eq!(
        m.load_error_naming("text_encoder/model.safetensors"),
        "file not found (nor model.fp16.safetensors, nor a sharded index model.safetensors.index.json or \
         model.safetensors.index.fp16.json); candlewick reads safetensors weights only"
    );
}

#[test]
fn malformed_or_missing_configs() {
    const TE: &str = "text_encoder/model.safetensors";
    const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
    const SCHED: &str = "scheduler/scheduler_config.json";
    // (file changed, its new contents or None to delete it, file the error names, message start)
    let cases: [(&str, Option<&str>, &str, &str); 8] = [
        ("unet/config.json", Some("{ not json"), "unet/config.json", "is not a valid config: key must be a string at line 1 column 3"),
        ("unet/config.json", None, "unet/config.json", "file not found"),
        ("vae/config.json", Some(r#"{"block_out_channels": "wide"}"#), "vae/config.json", "is not a valid config: block_out_channels: invalid type: string \"wide\", expected a sequence at line 1 column 29"),
        ("vae/config.json", Some(r#"{"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"]}"#), VAE, "down_block_types has 1 entries but block_out_channels has 2"),
        ("text_encoder/config.json", Some(r#"{"hidden_size": 48, "num_attention_heads": 4}"#), TE, "shape mismatch for text_model.embeddings.token_embedding.weight, expected: [49408, 48], got: [49408, 32]"),
        (SCHED, Some(r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 0, "typo": 1}"#), SCHED, "is not a valid DDIMScheduler config: Expected integer between 1 and 100000 for scheduler.num_train_timesteps but received 0"),
        (SCHED, Some(r#"{"beta_schedule": "cosine"}"#), SCHED, "is not a valid DDIMScheduler config: Expected one of \"linear\", \"scaled_linear\", \"squaredcos_cap_v2\" for scheduler.beta_schedule but received \"cosine\""),
        ("model_index.json", Some(r#"{"_class_name": "StableDiffusion3Pipeline"}"#), "model_index.json", "_class_name is \"StableDiffusion3Pipeline\"; candlewick loads [\"StableDiffusionPipeline\", \"StableDiffusionImg2ImgPipeline\", \"StableDiffusionInpaintPipeline\", \"LatentConsistencyModelPipeline\""),
    ];
    check_file_cases(&cases);
}

#[test]
fn missing_or_mismatched_tokenizer_files() {
    let vocab_json = "tokenizer/vocab.json";
    let cases: [(&str, Option<&str>, &str, &str); 8] = [
        (
            vocab_json,
            None,
            vocab_json,
            "file not found (a CLIP tokenizer folder needs vocab.json, merges.txt and tokenizer_config.json)",
        ),
        ("tokenizer/merges.txt", None, "tokenizer/merges.txt", "file not found"),
        ("tokenizer/tokenizer_config.json", None, "tokenizer/tokenizer_config.json", "file not found"),
        (vocab_json, Some("[1, 2, 3]"), vocab_json, "is not a JSON object of token ids"),
        (
            "tokenizer/merges.txt",
            Some("#version: 0.2\nzzzq qqqz\n"),
            "tokenizer/merges.txt",
            "a merge refers to \"zzzq\", which is not in",
        ),
        (
            "tokenizer/tokenizer_config.json",
            Some(r#"{"model_max_length": 0}"#),
            "tokenizer/tokenizer_config.json",
            "model_max_length is 0, expected an integer between 2 and 1000000",
        ),
        // A vocabulary from another tokenizer: the merges no longer match it.
        (
            vocab_json,
            Some(r#"{"a</w>": 0, "b</w>": 1}"#),
            "tokenizer/merges.txt",
            "a merge refers to \"i\", which is not in",
        ),
        // A special token the vocabulary lacks.
        (
            "tokenizer/special_tokens_map.json",
            Some(r#"{"pad_token": "<|pad|>"}"#),
            "tokenizer/special_tokens_map.json",
            "pad_token \"<|pad|>\" is not in",
        ),
    ];
    check_file_cases(&cases);
}

#[test]
fn a_tokenizer_with_more_ids_than_the_text_encoder_has_rows() {
    let m = Copy::new();
    m.write("text_encoder/config.json", r#"{"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 3, "intermediate_size": 37, "vocab_size": 1000}"#);
    let message = m.load_error_naming("tokenizer");
    assert_eq!(
        message,
        "does not match the text encoder: its ids reach 49407 but text_encoder/config.json has vocab_size 1000"
    );
}

#[test]
fn the_header_check_accepts_the_fixtures_and_reads_every_tensor() {
    let path = common::fixtures().join("tiny-sd").join(UNET);
    let file = SafetensorsFile::parse(&path, fs::read(&path).unwrap()).expect("fixture parses");
    for name in file.names() {
        file.tensor(&name, None, candle_core::DType::F32, &candle_core::Device::Cpu).expect("tensor loads");
    }
}

/// Each case: in a fresh copy of the tiny model, write `contents` to `rel` (or delete it when None);
/// loading must fail with an error that names `named` and starts with `expected`.
fn check_file_cases(cases: &[(&str, Option<&str>, &str, &str)]) {
    for &(rel, contents, named, expected) in cases {
        let m = Copy::new();
        match contents {
            Some(text) => m.write(rel, text),
            None => fs::remove_file(m.path(rel)).unwrap(),
        }
        let message = m.load_error_naming(named);
        assert!(message.starts_with(expected), "{rel}: {message:?} should start with {expected:?}");
    }
}
