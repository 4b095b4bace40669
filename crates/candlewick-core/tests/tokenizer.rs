//! Goldens: test/fixtures/goldens/tokens.json and clip_tokenizer_reference.json, made by
//! scripts/make_fixtures.py with transformers 5's CLIPTokenizer on test/fixtures/tiny-sd/tokenizer
//! (SD1.5's tokenizer files): input_ids with padding="max_length", truncation=True, max_length=77, and
//! the truncation warning text of diffusers' StableDiffusionPipeline.encode_prompt.
use std::path::{Path, PathBuf};

use candlewick_core::tokenizer::ClipTokenizer;
use serde_json::Value;

#[derive(serde::Deserialize)]
struct Tokens {
    prompts: Vec<Golden>,
}

#[derive(serde::Deserialize)]
struct Golden {
    prompt: String,
    input_ids: Vec<u32>,
    truncated: bool,
    truncated_text: Option<String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
}

fn tokenizer_dir() -> PathBuf {
    fixtures().join("tiny-sd/tokenizer")
}

fn goldens() -> Vec<Golden> {
    let text = std::fs::read_to_string(fixtures().join("goldens/tokens.json")).expect("tokens.json");
    serde_json::from_str::<Tokens>(&text).expect("tokens.json").prompts
}

/// A copy of the fixture tokenizer folder in a fresh temporary directory, for damaging.
fn copy_of_tokenizer(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candlewick-tokenizer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(tokenizer_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn every_golden_prompt_tokenizes_exactly_as_transformers() {
    let tok = ClipTokenizer::from_folder(&tokenizer_dir()).unwrap();
    assert_eq!(tok.max_length(), 77);
    let goldens = goldens();
    assert!(goldens.len() >= 100, "tokens.json has {} prompts", goldens.len());
    assert!(goldens.iter().filter(|g| g.truncated).count() >= 5, "tokens.json has too few over-long prompts");
    let mut mismatches = Vec::new();
    for g in &goldens {
        let e = tok.encode(&g.prompt).unwrap();
        if e.ids != g.input_ids || e.truncated.is_some() != g.truncated || e.truncated != g.truncated_text {
            mismatches.push(format!(
                "{:?}\n  got  {:?} {:?}\n  want {:?} {:?}",
                g.prompt, e.ids, e.truncated, g.input_ids, g.truncated_text
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} prompts differ:\n{}",
        mismatches.len(),
        goldens.len(),
        mismatches.join("\n")
    );
}

#[test]
fn pipeline_matches_transformers_backend_tokenizer() {
    let tok = ClipTokenizer::from_folder(&tokenizer_dir()).unwrap();
    let ours: Value = serde_json::from_str(&tok.backend().to_string(false).unwrap()).unwrap();
    let text = std::fs::read_to_string(fixtures().join("goldens/clip_tokenizer_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    for key in ["added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"] {
        assert_eq!(ours[key], reference[key], "{key}");
    }
    for key in [
        "type",
        "dropout",
        "unk_token",
        "continuing_subword_prefix",
        "end_of_word_suffix",
        "fuse_unk",
        "byte_fallback",
        "ignore_merges",
    ] {
        assert_eq!(ours["model"][key], reference["model"][key], "model.{key}");
    }
}

/// SD2.x's tokenizer differs from SD1.5's only by `"pad_token": "!"` in special_tokens_map.json: it
/// pads with "!" (id 0) and, as transformers 5 resolves it, `<|endoftext|>` becomes a normalized
/// token. For prompts without "!" or special-token text the ids are SD1.5's with 0 after the end token.
#[test]
fn sd2_pad_token_from_special_tokens_map() {
    let dir = copy_of_tokenizer("sd2");
    let map_path = dir.join("special_tokens_map.json");
    let mut map: Value = serde_json::from_str(&std::fs::read_to_string(&map_path).unwrap()).unwrap();
    map["pad_token"] = Value::from("!");
    std::fs::write(&map_path, map.to_string()).unwrap();
    let tok = ClipTokenizer::from_folder(&dir).unwrap();
    let eos = 49407;
    let mut checked = 0;
    for g in goldens().iter().filter(|g| !g.prompt.contains('!') && !g.prompt.contains("<|")) {
        let end = g.input_ids.iter().position(|&id| id == eos).unwrap();
        let want: Vec<u32> = g.input_ids.iter().enumerate().map(|(i, &id)| if i > end { 0 } else { id }).collect();
        assert_eq!(tok.encode(&g.prompt).unwrap().ids, want, "{:?}", g.prompt);
        checked += 1;
    }
    assert!(checked >= 80, "only {checked} prompts checked");
    let _ = std::fs::remove_dir_all(&dir);
}

fn error_for(name: &str, damage: impl FnOnce(&Path)) -> String {
    let dir = copy_of_tokenizer(name);
    damage(&dir);
    let err = ClipTokenizer::from_folder(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    err
}

#[test]
fn damaged_folders_are_errors_naming_the_file() {
    let sweep: Vec<(&str, Box<dyn FnOnce(&Path)>, &str, &str)> = vec![
        ("no-vocab", Box::new(|d| std::fs::remove_file(d.join("vocab.json")).unwrap()), "vocab.json", "file not found"),
        (
            "no-merges",
            Box::new(|d| std::fs::remove_file(d.join("merges.txt")).unwrap()),
            "merges.txt",
            "file not found",
        ),
        (
            "no-config",
            Box::new(|d| std::fs::remove_file(d.join("tokenizer_config.json")).unwrap()),
            "tokenizer_config.json",
            "file not found",
        ),
        (
            "bad-vocab",
            Box::new(|d| std::fs::write(d.join("vocab.json"), "[1, 2]").unwrap()),
            "vocab.json",
            "not a JSON object",
        ),
        (
            "merge-out-of-vocab",
            Box::new(|d| {
                let merges = std::fs::read_to_string(d.join("merges.txt")).unwrap();
                std::fs::write(d.join("merges.txt"), merges + "zzqx\u{1F600} q\n").unwrap();
            }),
            "merges.txt",
            "which is not in",
        ),
        (
            "bad-merge-line",
            Box::new(|d| {
                std::fs::write(d.join("merges.txt"), "#version: 0.2\nt h\nthree parts here\n").unwrap();
            }),
            "merges.txt",
            "merge 2 (not counting #version) is not two tokens",
        ),
        (
            "pad-not-in-vocab",
            Box::new(|d| {
                let map = std::fs::read_to_string(d.join("special_tokens_map.json")).unwrap();
                std::fs::write(
                    d.join("special_tokens_map.json"),
                    map.replace("\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": \"<pad>\""),
                )
                .unwrap();
            }),
            "special_tokens_map.json",
            "pad_token \"<pad>\" is not in",
        ),
        (
            "no-max-length",
            Box::new(|d| {
                let config = std::fs::read_to_string(d.join("tokenizer_config.json")).unwrap();
                std::fs::write(d.join("tokenizer_config.json"), config.replace("\"model_max_length\": 77,", ""))
                    .unwrap();
            }),
            "tokenizer_config.json",
            "has no model_max_length",
        ),
        (
            "bad-token",
            Box::new(|d| {
                let config = std::fs::read_to_string(d.join("tokenizer_config.json")).unwrap();
                std::fs::write(
                    d.join("tokenizer_config.json"),
                    config.replace("\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": 5"),
                )
                .unwrap();
            }),
            "tokenizer_config.json",
            "pad_token is neither a string nor an object",
        ),
    ];
    for (name, damage, file, message) in sweep {
        let err = error_for(name, damage);
        let (path, rest) = err.split_once(": ").unwrap_or(("", &err));
        assert!(path.ends_with(file), "{name}: error names {path:?}, not {file}: {err}");
        assert!(rest.contains(message), "{name}: {err}");
    }
}
