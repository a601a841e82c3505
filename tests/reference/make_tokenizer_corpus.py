#!/usr/bin/env python3
"""Writes tests/data/hf_tokenizers/corpus.txt: the lines the tokenizer fixtures encode.

Hand-written lines of each kind the tokenizers must get right (prose, code, several scripts, emoji and
ZWJ sequences, digit runs, whitespace runs and tabs, the texts of special tokens, carriage returns,
invalid UTF-8), then lines mixed from those pieces by a fixed seed, so the file is the same on every
run. One line per text, split on b"\\n" only; the file is bytes, not all of it UTF-8.
Usage: python3 tests/reference/make_tokenizer_corpus.py OUT_FILE
"""
import random
import sys

BASE = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life, isn't it? They're here; we've gone; I'm sure you'll see; he'd go.",
    "IT'S LOUD. WE'RE HERE. THEY'VE GONE. I'M OUT. YOU'LL SEE. HE'D KNOW.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
    "Prompt tuning learns a few virtual tokens; the frozen model reads them as context.",
    "\"Quoted text\", (parenthesised), [bracketed], {braced} and <angled>.",
    "e-mail: someone@example.com, URL: https://example.org/path?q=1&r=two#frag",
    "Price: $1,234.56 (or €1.234,56), 15% off -- today only!!!",
    "Numbers: 0 1 12 123 1234 12345 123456 1234567 12345678901234567890",
    "3.14159265358979 2.718281828 6.022e23 -42 +7 0x1F 0b1010 1_000_000",
    "Dates 2026-12-02, times 23:59:59, phones +1 (555) 010-9999.",
    "int main(int argc, char** argv) { return argc > 1 ? 0 : 1; }",
    "def f(x):\treturn [i ** 2 for i in range(x) if i % 3 == 0]",
    "    if (ptr != nullptr && ptr->next) { ptr = ptr->next; }  // advance",
    "std::vector<std::pair<int, float>> v{{1, 2.0f}, {3, 4.5f}};",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "<html><body class=\"main\"><p>Hi&nbsp;there</p></body></html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b^=6;c|=7;d&=8;e<<=1;f>>=2;",
    "#!/bin/sh\nset -eu",
    "tabs\tbetween\twords\t\tand\t\t\tmore",
    "\tleading tab",
    "trailing tab\t",
    "spaces     in     the     middle",
    "mixed \t \t whitespace \t",
    "line with a carriage return\r",
    "windows line\r\nending inside",
    "\r\n\r\n",
    "   ",
    "\t",
    " ",
    "a",
    "!",
    "...",
    "?!?!",
    "日本語のテキストです。東京は大きい都市です。",
    "中文文本：我们今天学习提示调优。",
    "한국어 문장입니다. 안녕하세요!",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ｶﾀｶﾅ half-width",
    "Русский текст: Съешь же ещё этих мягких французских булок.",
    "Українська: Їжак і ґанок, щастя є.",
    "العربية: مرحبا بالعالم، كيف حالك؟",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया, आप कैसे हैं?",
    "Ελληνικά: Γειά σου Κόσμε",
    "ไทย: สวัสดีชาวโลก",
    "Tiếng Việt: Xin chào thế giới, tôi là người Việt Nam.",
    "Deutsch: Größe, Straße, Übermaß, ÄÖÜäöüß",
    "Français: déjà vu, garçon, naïve, cœur, Noël",
    "Español: ¿Qué tal? ¡Muy bien! El niño come piña.",
    "Polski: Zażółć gęślą jaźń",
    "Türkçe: İstanbul, ılık, ŞÇĞ",
    "Emoji: 😀 😃 😄 😁 😆 🥹 🤖 🚀 🎉",
    "ZWJ: 👨‍👩‍👧‍👦 👩‍💻 🏳️‍🌈 🧑🏽‍🚀 ❤️‍🔥",
    "Skin tones: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "Flags: 🇫🇷 🇯🇵 🇺🇸 🇩🇪",
    "Keycaps: 1️⃣ 2️⃣ #️⃣",
    "Combining: e\u0301 a\u0308 n\u0303 o\u0302 (decomposed) vs é ä ñ ô (composed)",
    "Hangul jamo: \u1100\u1161\u11a8 vs 각",
    "Angstrom \u212b ohm \u2126 kelvin \u212a",
    "Ligatures: \ufb01 \ufb02 and \u2163 roman",
    "Zero width: a\u200bb c\u200cd e\u200de f\ufeffg",
    "Non-breaking\u00a0space and narrow\u202fspace and ideographic\u3000space",
    "Math: ∑ ∫ √ ∞ ≠ ≤ ≥ ∀ ∃ ∈ ∉ ⊂ ⊃ α β γ δ",
    "Arrows and boxes: ← → ↑ ↓ ┌─┐ │ │ └─┘",
    "Private use: \ue000\ue001 and supplementary 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚",
    "Sentencepiece marker ▁ inside ▁▁ text",
    "Byte-level stand-ins Ġ Ċ ĉ in text",
    "<s>",
    "</s>",
    "<unk>",
    "<s> Hello </s>",
    "text<s>glued</s>text",
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "<|im_start|>user hi<|im_end|><|endoftext|>",
    "<think>\nreasoning\n</think>",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|fim_prefix|>def<|fim_middle|>x<|fim_suffix|>",
    "<|reserved_special_token_5|> <|reserved_special_token_250|>",
    "<|endoftext|",
    "<|im_start",
    "<<s>>",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ababababababababababababababababababababababababababababab",
    "aaaa bbbb cccc dddd eeee ffff gggg hhhh",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case",
    "don't DON'T Don'T o'clock rock'n'roll '90s 'quoted'",
    "MiXeD CaSe WoRdS",
    "1st 2nd 3rd 4th 21st 100th",
    "a1b2c3d4 abc123def 123abc",
    "٠١٢٣٤٥٦٧٨٩ arabic-indic digits, ०१२३ devanagari digits, ①②③ circled",
    "Ⅻ roman numeral, ½ ¾ fractions, ² ³ superscripts",
]

INVALID = [
    b"invalid \xff byte",
    b"\xc3\x28 bad continuation",
    b"truncated \xe2\x82",
    b"overlong \xc0\xaf slash",
    b"surrogate \xed\xa0\x80 half",
    b"lone continuation \x80\x81\x82",
    b"too big \xf4\x90\x80\x80",
    b"\xfe\xfe\xff\xff",
    b"mixed \xe6\x97\xa5 \xe6\x97 \xa5 end",
    b"emoji cut \xf0\x9f\x98",
]

PIECES = [
    "hello", "world", "prompt", "tuning", "the", "of", "and", " ", "  ", "\t", ",", ".", "!", "?",
    "123", "4567", "2026", "3.5", "日本", "語", "Привет", "мир", "नमस्ते", "مرحبا", "😀", "👩‍💻",
    "🏳️‍🌈", "don't", "I'll", "<s>", "</s>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "▁",
    "x = y + 1;", "f(a, b)", "->", "::", "\"", "'", "é", "e\u0301", "ß", "İ", "Ωmega", "\u00a0",
    "\r", "...", "---", "$", "#", "@", "%", "CamelCase", "ALLCAPS", "under_score", "tab\there",
]


def main() -> None:
    out = sys.argv[1]
    lines = [s.encode("utf-8") for s in BASE] + INVALID
    rng = random.Random(20261202)
    while len(lines) < 360:
        n = rng.randint(2, 12)
        parts = []
        for _ in range(n):
            p = rng.choice(PIECES)
            if rng.random() < 0.6:
                p += rng.choice(["", " ", " ", "  "])
            parts.append(p)
        lines.append("".join(parts).encode("utf-8"))
    # A line may not hold "\n" (the separator): the few BASE texts with one are split there.
    flat = []
    for line in lines:
        flat.extend(line.split(b"\n"))
    with open(out, "wb") as f:
        f.write(b"\n".join(flat) + b"\n")


if __name__ == "__main__":
    main()
