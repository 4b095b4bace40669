//! The prompt weighting syntax of AUTOMATIC1111's stable-diffusion-webui (`prompt_parser.
//! parse_prompt_attention`), the syntax users bring from it and from diffusers' community
//! `lpw_stable_diffusion` pipeline, which copies it:
//!
//! - `(text)` multiplies the weight of `text` by 1.1, `[text]` by 1/1.1; they nest and multiply
//!   (`((text))` is 1.21);
//! - `(text:1.3)` multiplies it by 1.3 (spaces allowed around the number: `(text: 1.3 )`);
//! - `\(`, `\)`, `\[`, `\]` and `\\` are the characters themselves; a lone `\` is dropped;
//! - `BREAK` (upper case, a word of its own) ends a part: each part is encoded on its own and the
//!   parts' embeddings are concatenated ([`super::weighted_embeddings`]); as in A1111 a leading or
//!   doubled `BREAK` gives an empty chunk and a trailing one nothing.
//!
//! Like A1111 the parser is lenient: a bracket never closed applies to the end of the prompt, a
//! closer with no opener is text, a `:` outside `(text:weight)` is text. Two inputs A1111 cannot
//! take either are errors naming the position: a weight that is not a number (`(a:1.2.3)`, where
//! Python's `float` raises), and `BREAK` inside brackets (A1111 gives it a weight of -1.1 and
//! encodes the word "break"). Empty runs of text (A1111 keeps them; they add no token) are dropped.

use crate::error::{expected, Result};

/// A run of text and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub text: String,
    pub weight: f64,
}

/// The prompt's parts (split at `BREAK`), each a list of weighted fragments, adjacent fragments
/// of equal weight merged as A1111 merges them. Every part has at least one fragment.
pub type Parts = Vec<Vec<Fragment>>;

/// One lexical token of A1111's `re_attention`, in its order of alternatives.
enum Token<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\` (the character after the backslash) or a lone `\` ("").
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:` weight `)`, with the weight's text and its byte offset.
    WeightClose(&'a str, usize),
    CloseRound,
    CloseSquare,
    /// A run of other characters, or a lone `:`.
    Text,
}

enum Entry {
    Text(String, f64),
    /// A `BREAK`, and whether a bracket's weight reached it.
    Break {
        in_brackets: bool,
    },
}

/// Parses `text` (the prompt option `option`, e.g. `prompt[0]`, named in errors).
pub fn parse_prompt_attention(text: &str, option: &str) -> Result<Parts> {
    let mut res: Vec<Entry> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Entry>, start: usize, by: f64| {
        for entry in &mut res[start..] {
            match entry {
                Entry::Text(_, w) => *w *= by,
                Entry::Break { in_brackets } => *in_brackets = true,
            }
        }
    };
    let mut pos = 0;
    while pos < text.len() {
        let (token, len) = next_token(&text[pos..], pos);
        match token {
            Token::Escaped(t) => res.push(Entry::Text(t.to_string(), 1.0)),
            Token::OpenRound => round.push(res.len()),
            Token::OpenSquare => square.push(res.len()),
            Token::WeightClose(w, at) if !round.is_empty() => {
                let weight: f64 = w.parse().map_err(|_| {
                    expected(
                        &format!("a number as the weight at character {} of (text:weight)", char_index(text, at)),
                        option,
                        format!("{w:?} in {text:?}"),
                    )
                })?;
                let start = round.pop().unwrap_or_default();
                multiply(&mut res, start, weight);
            }
            Token::CloseRound if !round.is_empty() => {
                let start = round.pop().unwrap_or_default();
                multiply(&mut res, start, 1.1);
            }
            Token::CloseSquare if !square.is_empty() => {
                let start = square.pop().unwrap_or_default();
                multiply(&mut res, start, 1.0 / 1.1);
            }
            _ => push_text_with_breaks(&mut res, &text[pos..pos + len]),
        }
        pos += len;
    }
    for start in round {
        multiply(&mut res, start, 1.1);
    }
    for start in square {
        multiply(&mut res, start, 1.0 / 1.1);
    }

    let mut parts: Parts = vec![Vec::new()];
    for entry in res {
        match entry {
            Entry::Break { in_brackets: true } => {
                return Err(expected(
                    "BREAK outside brackets (it starts a new part of the prompt)",
                    option,
                    format!("{text:?}"),
                ))
            }
            Entry::Break { in_brackets: false } => parts.push(Vec::new()),
            // Empty runs (around a BREAK, a lone backslash) add no token: dropped.
            Entry::Text(text, _) if text.is_empty() => {}
            Entry::Text(text, weight) => {
                let part = parts.last_mut().expect("parts is never empty");
                match part.last_mut() {
                    Some(last) if last.weight == weight => last.text.push_str(&text),
                    _ => part.push(Fragment { text, weight }),
                }
            }
        }
    }
    // A1111 starts a chunk at a BREAK only when text follows it: a trailing BREAK adds nothing.
    if parts.len() > 1 && parts.last().is_some_and(Vec::is_empty) {
        parts.pop();
    }
    for part in &mut parts {
        if part.is_empty() {
            part.push(Fragment { text: String::new(), weight: 1.0 });
        }
    }
    Ok(parts)
}

/// The token at the start of `rest` (which starts at byte `offset` of the prompt) and its length.
fn next_token(rest: &str, offset: usize) -> (Token<'_>, usize) {
    let mut chars = rest.chars();
    let c = chars.next().expect("rest is not empty");
    match c {
        '\\' => match chars.next() {
            Some(e @ ('(' | ')' | '[' | ']' | '\\')) => (Token::Escaped(&rest[1..1 + e.len_utf8()]), 2),
            _ => (Token::Escaped(""), 1),
        },
        '(' => (Token::OpenRound, 1),
        '[' => (Token::OpenSquare, 1),
        ':' => match weight_close(rest) {
            Some((start, end, len)) => (Token::WeightClose(&rest[start..end], offset + start), len),
            None => (Token::Text, 1),
        },
        ')' => (Token::CloseRound, 1),
        ']' => (Token::CloseSquare, 1),
        _ => {
            let len = rest.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(rest.len());
            (Token::Text, len)
        }
    }
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `rest`: the number's byte range and the match's length.
fn weight_close(rest: &str) -> Option<(usize, usize, usize)> {
    let skip_space = |from: usize| from + rest[from..].len() - rest[from..].trim_start().len();
    let start = skip_space(1);
    let mut end = start;
    if rest[end..].starts_with(['+', '-']) {
        end += 1;
    }
    let digits = rest[end..].find(|c: char| !(c == '.' || c.is_ascii_digit())).unwrap_or(rest.len() - end);
    if digits == 0 {
        return None;
    }
    end += digits;
    let close = skip_space(end);
    rest[close..].starts_with(')').then_some((start, end, close + 1))
}

/// A1111's text branch: the text split at `\s*\bBREAK\b\s*`, a break between the pieces.
fn push_text_with_breaks(res: &mut Vec<Entry>, text: &str) {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut rest = text;
    let mut piece_start = 0;
    let mut search_from = 0;
    while let Some(found) = rest[search_from..].find("BREAK") {
        let at = search_from + found;
        let before_ok = !rest[..at].chars().next_back().is_some_and(is_word);
        let after_ok = !rest[at + 5..].chars().next().is_some_and(is_word);
        if !(before_ok && after_ok) {
            search_from = at + 5;
            continue;
        }
        let piece_end = rest[..at].trim_end().len();
        res.push(Entry::Text(rest[piece_start..piece_end].to_string(), 1.0));
        res.push(Entry::Break { in_brackets: false });
        let after = &rest[at + 5..];
        rest = after.trim_start();
        piece_start = 0;
        search_from = 0;
    }
    res.push(Entry::Text(rest[piece_start..].to_string(), 1.0));
}

/// The position of byte `at` in characters (not bytes), counted from 1, for messages.
fn char_index(text: &str, at: usize) -> usize {
    text[..at].chars().count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Vec<(String, f64)> {
        let parts = parse_prompt_attention(text, "prompt").unwrap();
        assert_eq!(parts.len(), 1, "{text:?} has a BREAK");
        parts[0].iter().map(|f| (f.text.clone(), f.weight)).collect()
    }

    fn pairs(expected: &[(&str, f64)]) -> Vec<(String, f64)> {
        expected.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    /// The examples of A1111's `parse_prompt_attention` docstring (modules/prompt_parser.py),
    /// with its outputs, to the last bit of Python's float products.
    #[test]
    fn a1111_docstring_examples() {
        assert_eq!(flat("normal text"), pairs(&[("normal text", 1.0)]));
        assert_eq!(flat("an (important) word"), pairs(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)]));
        assert_eq!(flat("(unbalanced"), pairs(&[("unbalanced", 1.1)]));
        assert_eq!(flat("\\(literal\\]"), pairs(&[("(literal]", 1.0)]));
        assert_eq!(flat("(unnecessary)(parens)"), pairs(&[("unnecessaryparens", 1.1)]));
        assert_eq!(
            flat("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            pairs(&[
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ])
        );
    }

    #[test]
    fn square_brackets_weights_and_escapes() {
        assert_eq!(flat("[a]"), pairs(&[("a", 1.0 / 1.1)]));
        assert_eq!(flat("((a))"), pairs(&[("a", 1.1 * 1.1)]));
        assert_eq!(flat("(a: 1.3 )b"), pairs(&[("a", 1.3), ("b", 1.0)]));
        assert_eq!(flat("(a:-0.5)"), pairs(&[("a", -0.5)]));
        assert_eq!(flat("a:1.2) b)"), pairs(&[("a:1.2) b)", 1.0)]));
        assert_eq!(flat("x \\\\ y \\ z"), pairs(&[("x \\ y  z", 1.0)]));
        assert_eq!(flat(""), pairs(&[("", 1.0)]));
        assert_eq!(flat("time: 12:30"), pairs(&[("time: 12:30", 1.0)]));
    }

    #[test]
    fn break_splits_parts() {
        let parts = parse_prompt_attention("a cat BREAK (a dog:1.2)  BREAK", "prompt").unwrap();
        let texts: Vec<Vec<(String, f64)>> =
            parts.iter().map(|p| p.iter().map(|f| (f.text.clone(), f.weight)).collect()).collect();
        assert_eq!(texts, vec![pairs(&[("a cat", 1.0)]), pairs(&[("a dog", 1.2)])]);
        // A leading or doubled BREAK gives an empty chunk, as in A1111.
        let parts = parse_prompt_attention("BREAK a BREAK BREAK b", "prompt").unwrap();
        let texts: Vec<Vec<String>> = parts.iter().map(|p| p.iter().map(|f| f.text.clone()).collect()).collect();
        assert_eq!(texts, vec![vec![""], vec!["a"], vec![""], vec!["b"]]);
        assert_eq!(flat("BREAKFAST break BREAK_"), pairs(&[("BREAKFAST break BREAK_", 1.0)]));
    }

    #[test]
    fn errors_name_the_option_and_position() {
        let e = parse_prompt_attention("a (cat:1.2.3)", "prompt[1]").unwrap_err().to_string();
        assert_eq!(
            e,
            "Expected a number as the weight at character 8 of (text:weight) for prompt[1] but received \"1.2.3\" in \"a (cat:1.2.3)\""
        );
        let e = parse_prompt_attention("(a BREAK b)", "negative_prompt[0]").unwrap_err().to_string();
        assert!(e.starts_with("Expected BREAK outside brackets"), "{e}");
        assert!(e.contains("for negative_prompt[0]"), "{e}");
    }
}
