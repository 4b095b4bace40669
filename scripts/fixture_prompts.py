"""Prompts for the tokenizer goldens (tokens.json) and the text encoder goldens (text_encoder.*)."""

LONG_1 = (
    "a highly detailed matte painting of a sprawling cyberpunk city at night, neon signs reflecting on wet "
    "streets, flying cars, towering skyscrapers, dense fog, volumetric lighting, cinematic composition, "
    "trending on artstation, by greg rutkowski and alphonse mucha, octane render, 8k, ultra realistic, "
    "sharp focus, intricate details, dramatic shadows, vibrant colors, wide angle lens, award winning photograph"
)
LONG_2 = " ".join(["cat"] * 80)
LONG_3 = "!" * 10 + " " + ", ".join(f"item{i}" for i in range(60))
LONG_4 = "an astronaut riding a horse on mars " * 12
LONG_5 = "😀" * 100
LONG_6 = "東京の夜景、" * 30
LONG_7 = " ".join(str(i) for i in range(100))
LONG_8 = "Supercalifragilisticexpialidocious antidisestablishmentarianism " * 9
LONG_9 = "a" * 500
LONG_10 = ("word " * 74).strip() + " truncated-here! yes"
EXACT_75 = ("cat " * 75).strip()  # 75 tokens + bos/eos = 77: not truncated
EXACT_76 = ("cat " * 76).strip()  # one token too many
LONG_SPECIAL = ("dog " * 80) + "<|endoftext|> tail <|startoftext|>"

TOKEN_PROMPTS = [
    # plain
    "a photo of a cat",
    "a photo of an astronaut riding a horse on mars",
    "blurry",
    "A beautiful sunset over the ocean",
    "portrait of a young woman, oil painting, renaissance style",
    "a dog",
    "the quick brown fox jumps over the lazy dog",
    "an isometric diorama of a tiny cozy bedroom",
    "macro shot of a dew drop on a leaf",
    "low quality, worst quality, jpeg artifacts",
    # case
    "A PHOTO OF A CAT",
    "a PhOtO oF a CaT",
    "NASA Apollo 11 LUNAR module",
    "iPhone McDonald's eBay",
    "CamelCaseWordsTogether",
    # accents and other Latin
    "café",
    "naïve café crème brûlée",
    "Ångström",
    "Ærøskøbing fjord",
    "Straße in München",
    "ÉCOLE NORMALE SUPÉRIEURE",
    "piñata jalapeño señor",
    "Dvořák and Čapek",
    "cafe\u0301 (decomposed accent)",
    "ﬁne ligature ﬂow",
    "İstanbul ıI",
    "ΑΒΓ Ελληνικά",
    "Москва, Красная площадь",
    # CJK
    "東京の夜景",
    "一只猫坐在窗台上",
    "한국어 문장입니다",
    "ひらがなとカタカナ",
    "中文English混合",
    "全角ＡＢＣ１２３",
    # RTL and other scripts
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    # emoji
    "😀",
    "a cat 🐱 and a dog 🐶",
    "👍🏽 thumbs up",
    "👩‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "👨🏿‍💻 coder",
    "🇯🇵🇺🇸 flags",
    "❤️ heart with variation selector",
    "🔥🔥🔥 fire",
    "☕ coffee ☀ sun ★ star",
    # punctuation
    "!!!",
    "?!?!?!",
    "...",
    "hello... world???",
    "a--b__c~~d",
    "(masterpiece:1.2), [best quality], {detailed}",
    "((((cat))))",
    "<lora:style:0.8>",
    "\"quoted\" 'single' `back`",
    "#hashtag @mention $100 %50 ^caret &and *star",
    "a/b\\c|d",
    "«guillemets» „low quotes“ ‘curly’ “double”",
    "— em dash – en dash … ellipsis",
    "¿Qué? ¡Sí!",
    # numbers
    "3.14",
    "1,000,000",
    "2026-11-26",
    "12:30pm",
    "1st 2nd 3rd 4th",
    "8k 4K 1080p 16:9",
    "0.5x zoom, f/1.8, ISO 100",
    "-42 +7 1e10",
    "٣ arabic digit ½ fraction ² superscript",
    "Ⅻ roman numeral",
    # contractions
    "don't",
    "it's",
    "we'll",
    "I'D",
    "they're you've I'm",
    "DON'T STOP",
    "o'clock rock'n'roll",
    "the cat's toy",
    "can’t (curly apostrophe)",
    "'s 't 're 've 'm 'll 'd",
    # html entities and markup
    "&amp;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "tom &amp; jerry",
    "&quot;quoted&quot; &#39;x&#39; &nbsp;",
    "<b>bold</b> <i>italic</i>",
    "https://example.com/path?q=1&r=2",
    "user@example.com",
    # whitespace
    "",
    " ",
    "   ",
    "  leading spaces",
    "trailing spaces   ",
    "  both  ",
    "multiple    internal     spaces",
    "tab\tseparated\twords",
    "new\nline",
    "\n\nleading newlines",
    "mixed \t\n whitespace \r\n run",
    "non\u00a0breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "ideographic\u3000space",
    "\u2003em space",
    # special tokens
    "<|startoftext|>",
    "<|endoftext|>",
    "<|startoftext|>a photo<|endoftext|>",
    "a <|endoftext|> b",
    "<|ENDOFTEXT|>",
    "<|STARTOFTEXT|>",  # bos is a normalized added token (matched after lowercasing), eos is not
    "<|StartOfText|> mixed",
    "</w>",
    "<|startoftext|><|startoftext|>",
    # odd
    "a",
    "I",
    "x" * 30,
    "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "cat cat cat cat cat",
    "a_b_c snake_case kebab-case",
    "C++ C# .NET node.js",
    "\u0000null char",
    "control\u0007bell",
    "ẞ capital sharp s",
    "Ǆ dz digraph",
    # over-long (> 77 tokens)
    LONG_1,
    LONG_2,
    LONG_3,
    LONG_4,
    LONG_5,
    LONG_6,
    LONG_7,
    LONG_8,
    LONG_9,
    LONG_10,
    EXACT_75,
    EXACT_76,
    LONG_SPECIAL,
]

TEXT_ENCODER_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "blurry",
    "A PHOTO of a Cat, (masterpiece:1.2) 8k!",
    "東京の夜景 café 😀👩‍👩‍👧‍👦",
    LONG_1,
]
