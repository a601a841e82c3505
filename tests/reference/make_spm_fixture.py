#!/usr/bin/python3
"""Writes the ids SentencePiece itself gives for a tokenizer.model on the tokenizer corpus.

    apt-get install python3-sentencepiece      (Debian's build of Google's library)
    /usr/bin/python3 tests/reference/make_spm_fixture.py MODEL CORPUS OUT_JSON

CORPUS is bytes split on b"\\n"; each line is passed to SentencePiece as bytes (it reads invalid
UTF-8 itself). OUT_JSON: {"generator", "corpus_sha256", "model_sha256", "lines": [[id, ...], ...],
"whole": [...]}, the ids of encode(line) with no BOS/EOS, and of the whole file as one text.
"""
import hashlib
import json
import sys

import sentencepiece


def main() -> None:
    model, corpus_path, out = sys.argv[1:4]
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    data = open(corpus_path, "rb").read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    result = {
        "generator": "tests/reference/make_spm_fixture.py with sentencepiece " +
                     sentencepiece.__version__,
        "corpus_sha256": hashlib.sha256(data).hexdigest(),
        "model_sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
        "lines": [sp.encode(line) for line in lines],
        "whole": sp.encode(data),
    }
    with open(out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
