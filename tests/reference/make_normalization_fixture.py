#!/usr/bin/python3
"""Writes tests/data/unicode/normalization.json: strings with their NFC, NFD, NFKC and NFKD forms
from Python's unicodedata, an implementation independent of tok/unicode_normalization.hpp.

Every code point that has a decomposition or a non-zero combining class appears (in runs of 16),
plus Hangul syllables and jamo, plus 1500 random mixes of those with ASCII letters and spaces (fixed
seed), which exercise reordering and composition across characters.
Usage: /usr/bin/python3 tests/reference/make_normalization_fixture.py [OUT]
"""
import json
import os
import random
import sys
import unicodedata


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        root, "tests", "data", "unicode", "normalization.json")
    cands = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and
             (unicodedata.decomposition(chr(c)) or unicodedata.combining(chr(c)))]
    cands += list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3))
    cands += list(range(0xAC00, 0xD7A4, 97))
    texts = ["".join(map(chr, cands[i:i + 16])) for i in range(0, len(cands), 16)]
    rng = random.Random(15)
    for _ in range(1500):
        texts.append("".join(chr(rng.choice(cands)) if rng.random() < 0.7 else rng.choice("aeoAEO ")
                             for _ in range(rng.randint(1, 8))))
    rows = [[t] + [unicodedata.normalize(f, t) for f in ("NFC", "NFD", "NFKC", "NFKD")]
            for t in texts]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/reference/make_normalization_fixture.py, Python " +
                                f"{sys.version_info.major}.{sys.version_info.minor} unicodedata " +
                                unicodedata.unidata_version,
                   "columns": ["text", "NFC", "NFD", "NFKC", "NFKD"], "rows": rows},
                  f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
