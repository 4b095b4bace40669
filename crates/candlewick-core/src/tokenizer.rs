//! CLIP's tokenizer, built with the `tokenizers` library exactly as transformers' `CLIPTokenizer`
//! (transformers 5, models/clip/tokenization_clip.py) builds it from a model's `tokenizer/` folder:
//! byte-level BPE with the `</w>` end-of-word suffix, NFC + whitespace collapse + lowercase,
//! CLIP's split regex, `<|startoftext|> ... <|endoftext|>` around the text, truncation to
//! `model_max_length` (77) keeping the end token, and padding with the folder's pad token
//! (`<|endoftext|>` in SD1.x, `!` in SD2.x).
//!
//! The special tokens and their matching flags come from tokenizer_config.json and
//! special_tokens_map.json, resolved as transformers' `from_pretrained` resolves them; see
//! [`special_tokens`].

mod special_tokens;

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{self, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::utils::padding::{PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};
use tokenizers::{AddedToken, Model, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use special_tokens::SpecialTokens;

/// CLIP's pre-tokenizer pattern (tokenization_clip.py): the two special tokens, English
/// contractions, runs of letters, single digits, runs of other non-space characters.
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The suffix CLIP's BPE appends to the last piece of each word.
const END_OF_WORD_SUFFIX: &str = "</w>";

/// One prompt, tokenized for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `model_max_length` ids: start token, text, end token, then the pad token.
    pub ids: Vec<u32>,
    /// The text cut off by truncation, decoded as diffusers' warning shows it, or None when the
    /// prompt fits.
    pub truncated: Option<String>,
}

/// transformers' `CLIPTokenizer` (tokenizers backend), loaded from a diffusers `tokenizer/` folder.
pub struct ClipTokenizer {
    /// Truncates to `max_length` and pads to it: what the text encoder receives.
    fixed: Tokenizer,
    /// The same tokenizer without truncation or padding: what diffusers compares against to warn.
    full: Tokenizer,
    max_length: usize,
    /// The start, end and padding tokens' ids.
    special_ids: SpecialIds,
}

/// The ids a chunked prompt is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl ClipTokenizer {
    /// Reads vocab.json, merges.txt, tokenizer_config.json and (if present) special_tokens_map.json.
    /// Errors name the file that is missing or does not agree with the vocabulary.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let vocab_path = existing_file(dir, "vocab.json")?;
        let merges_path = existing_file(dir, "merges.txt")?;
        let config_path = existing_file(dir, "tokenizer_config.json")?;
        let map_path = dir.join("special_tokens_map.json");
        let map_path = map_path.is_file().then_some(map_path);
        let specials = SpecialTokens::read(&config_path, map_path.as_deref())?;

        let model = read_bpe(&vocab_path, &merges_path, &specials.unk)?;
        // token_to_id, not get_vocab (a copy of the 49k-entry vocabulary for each look-up).
        let id_of = |token: &str, from: &Path, role: &str| -> Result<u32> {
            model
                .token_to_id(token)
                .ok_or_else(|| Error::model(from, format!("{role} {token:?} is not in {}", vocab_path.display())))
        };
        for (token, from, role) in specials.all_with_sources() {
            id_of(token, from, role)?;
        }
        let bos_id = id_of(&specials.bos, &specials.source, "bos_token")?;
        let eos_id = id_of(&specials.eos, &specials.source, "eos_token")?;
        let pad_id = id_of(&specials.pad, &specials.source, "pad_token")?;
        let max_length = specials.model_max_length;

        // Same order as CLIPTokenizer.__init__: normalizer and pre-tokenizer before the special
        // tokens are added (normalized special tokens are matched in normalized text).
        let mut full = Tokenizer::new(model);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| Error::Internal(format!("CLIP whitespace regex: {e}")))?
                .into(),
            Lowercase.into(),
        ]);
        full.with_normalizer(Some(normalizer));
        let split = Split::new(SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| Error::Internal(format!("CLIP split regex: {e}")))?;
        full.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        full.with_decoder(Some(ByteLevelDecoder::default()));
        full.with_post_processor(Some(
            RobertaProcessing::new((specials.eos.clone(), eos_id), (specials.bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        let (special, plain): (Vec<_>, Vec<_>) = specials.added.iter().cloned().partition(|t| t.special);
        full.add_special_tokens(&special);
        full.add_tokens(&plain);

        let mut fixed = full.clone();
        fixed
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::model(&specials.source, format!("model_max_length {max_length}: {e}")))?;
        fixed.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: specials.pad.clone(),
        }));
        Ok(Self { fixed, full, max_length, special_ids: SpecialIds { bos: bos_id, eos: eos_id, pad: pad_id } })
    }

    /// Tokenizes one prompt: `max_length()` ids, plus the part that did not fit.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let tokenize_error = |e| Error::Internal(format!("tokenizing {text:?}: {e}"));
        let ids = self.fixed.encode(text, true).map_err(tokenize_error)?.get_ids().to_vec();
        if ids.len() != self.max_length {
            return Err(Error::Internal(format!("tokenizer gave {} ids instead of {}", ids.len(), self.max_length)));
        }
        let untruncated = self.full.encode(text, true).map_err(tokenize_error)?.get_ids().to_vec();
        // diffusers' encode_prompt: warn when the untruncated ids differ, and show
        // batch_decode(untruncated_ids[:, model_max_length - 1 : -1]).
        let truncated = if untruncated.len() >= ids.len() && untruncated != ids {
            let cut = &untruncated[self.max_length - 1..untruncated.len() - 1];
            Some(self.decode(cut)?)
        } else {
            None
        };
        Ok(Encoded { ids, truncated })
    }

    /// The ids of `text` without the start and end tokens, untruncated: what compel and A1111
    /// take from `tokenizer(text).input_ids[1:-1]` for each weighted fragment.
    pub fn encode_fragment(&self, text: &str) -> Result<Vec<u32>> {
        let encoded =
            self.full.encode(text, false).map_err(|e| Error::Internal(format!("tokenizing {text:?}: {e}")))?;
        Ok(encoded.get_ids().to_vec())
    }

    /// Adds `tokens` as transformers' `tokenizer.add_tokens(token)` does (not special, matched in
    /// normalized text) and returns their ids.
    pub fn add_tokens(&mut self, tokens: &[String]) -> Result<Vec<u32>> {
        let added: Vec<AddedToken> =
            tokens.iter().map(|t| AddedToken::from(t.clone(), false).normalized(true)).collect();
        self.full.add_tokens(&added);
        self.fixed.add_tokens(&added);
        tokens
            .iter()
            .map(|t| self.full.token_to_id(t).ok_or_else(|| Error::Internal(format!("token {t:?} was not added"))))
            .collect()
    }

    /// Whether `token` is in the vocabulary or among the added tokens.
    pub fn has_token(&self, token: &str) -> bool {
        self.full.token_to_id(token).is_some()
    }

    /// The tokens (as strings) `text` splits into, without the start and end tokens:
    /// transformers' `tokenizer.tokenize(text)`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let encoded =
            self.full.encode(text, false).map_err(|e| Error::Internal(format!("tokenizing {text:?}: {e}")))?;
        Ok(encoded.get_tokens().to_vec())
    }

    /// The start, end and padding tokens' ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.special_ids
    }

    /// transformers' `CLIPTokenizer.decode`: byte-level decoding, then every `</w>` becomes a
    /// space and the ends are stripped (BPE tokenizers skip clean_up_tokenization_spaces).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self.full.decode(ids, false).map_err(|e| Error::Internal(format!("decoding {ids:?}: {e}")))?;
        Ok(python_strip(&text.replace(END_OF_WORD_SUFFIX, " ")).to_string())
    }

    /// The `tokenizers` pipeline without truncation or padding: transformers' `backend_tokenizer`.
    pub fn backend(&self) -> &Tokenizer {
        &self.full
    }

    /// One past the largest id this tokenizer can produce: the text encoder's embedding needs at
    /// least this many rows.
    pub fn vocab_end(&self) -> usize {
        self.full.get_vocab(true).values().max().map_or(0, |&id| id as usize + 1)
    }

    /// Tokens per prompt, the text encoder's context length (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

fn existing_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::model(
            path,
            "file not found (a CLIP tokenizer folder needs vocab.json, merges.txt and tokenizer_config.json)",
        ))
    }
}

/// The BPE model as `tokenizers.models.BPE(vocab_file, merges_file, end_of_word_suffix="</w>")`
/// reads it, with errors sent to the file at fault.
fn read_bpe(vocab_path: &Path, merges_path: &Path, unk: &str) -> Result<BPE> {
    let blame = |e: tokenizers::Error| -> Error {
        match e.downcast_ref::<bpe::Error>() {
            Some(bpe::Error::BadMerges(line)) => Error::model(
                merges_path,
                format!("merge {line} (not counting #version) is not two tokens separated by a space"),
            ),
            Some(bpe::Error::MergeTokenOutOfVocabulary(token)) => Error::model(
                merges_path,
                format!("a merge refers to {token:?}, which is not in {}", vocab_path.display()),
            ),
            Some(bpe::Error::Io(io)) => {
                let culprit = if std::fs::File::open(vocab_path).is_err() { vocab_path } else { merges_path };
                Error::model(culprit, format!("cannot be read: {io}"))
            }
            _ => Error::model(vocab_path, format!("is not a JSON object of token ids: {e}")),
        }
    };
    let vocab = vocab_path.to_string_lossy().into_owned();
    let merges = merges_path.to_string_lossy().into_owned();
    let (vocab, merges) = BPE::read_file(&vocab, &merges).map_err(blame)?;
    BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD_SUFFIX.into())
        .fuse_unk(false)
        .unk_token(unk.into())
        .build()
        .map_err(blame)
}

/// Python's `str.strip()`: Rust's whitespace plus the four ASCII separators (U+001C..U+001F).
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}
