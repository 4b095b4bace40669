"""The real CLIP BPE vocabulary, converted from open_clip's `bpe_simple_vocab_16e6.txt.gz` into the
`vocab.json` + `merges.txt` pair that transformers' CLIPTokenizer (and openai/clip-vit-large-patch14, which
Stable Diffusion 1.x ships in its `tokenizer/` folder) uses.

Conversion as in OpenAI's `clip/simple_tokenizer.py`: vocab = the 256 byte-level characters, the same with
`</w>`, then one entry per merge (the merge's two halves joined), then `<|startoftext|>`, `<|endoftext|>`.
"""

import gzip
import json
import os

import open_clip

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# SD1.5's tokenizer/tokenizer_config.json (openai/clip-vit-large-patch14), as shipped.
def _added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": _added(BOS),
    "do_lower_case": True,
    "eos_token": _added(EOS),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": EOS,
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": _added(EOS),
}


def _plain(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


SPECIAL_TOKENS_MAP = {
    "bos_token": _plain(BOS),
    "eos_token": _plain(EOS),
    "pad_token": EOS,
    "unk_token": _plain(EOS),
}


def bytes_to_unicode():
    """OpenAI CLIP's byte -> printable unicode character table (GPT-2's), in its original order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(num_merges=None):
    """Returns (vocab: dict token -> id, merges: list of 'a b' lines) exactly as openai/clip-vit-large-patch14;
    with `num_merges`, the same built from the first `num_merges` merges only (a smaller, still consistent
    vocabulary: 512 byte tokens, one per merge, then the two specials)."""
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    if num_merges is not None:
        merges = merges[:num_merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for merge in merges:
        vocab.append("".join(merge.split()))
    vocab.extend([BOS, EOS])
    ids = {tok: i for i, tok in enumerate(vocab)}
    if num_merges is None and len(ids) != 49408:
        raise SystemExit(f"CLIP vocab has {len(ids)} entries, expected 49408")
    return ids, merges


def write_tokenizer_folder(out_dir, num_merges=None, pad_token=None):
    """Writes vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (SD1.5's file set);
    `num_merges` keeps the first merges only, `pad_token` replaces the pad token (SDXL's tokenizer_2: "!")."""
    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(num_merges)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(merges))
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({**TOKENIZER_CONFIG, "pad_token": pad_token or EOS}, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({**SPECIAL_TOKENS_MAP, "pad_token": pad_token or EOS}, f, indent=2)
        f.write("\n")
