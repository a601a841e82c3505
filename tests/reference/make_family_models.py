#!/usr/bin/env python3
"""Writes one tiny Hugging Face model folder per family into tests/data/models/tiny-<family>/,
from the golden files of make_golden.py (tests/data/golden_<family>.json): the config.json
transformers reads, the weights as an F32 model.safetensors under their Hugging Face names, and
golden_logits.txt, the float64 reference's logits for the first row of the golden batch in the
format of `generate --dump-logits` (one line per position: position, input id, then the
vocabulary's logits, %.9g), and a tokenizer.json that fits the 32-token vocabulary: lower-case
letters with Llama 2's pipeline (`▁` for spaces, `<unk>` for anything else, BOS added, merges of
"▁t" and "th"). The examples' tests run on these folders, so every family is tried by the same
programs a user runs. Standard library only.

    python3 tests/reference/make_family_models.py        # from the repository root
"""

import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")

# family folder name -> golden file; the LLaMA-GQA and GPT-2 goldens predate hf_config, so their
# config.json is written here from the golden's own config.
FAMILIES = {
    "gpt2": "golden_gpt2.json",
    "llama": "golden_llama_gqa.json",
    "llama3": "golden_llama3.json",
    "mistral": "golden_mistral.json",
    "qwen2": "golden_qwen2.json",
    "qwen3": "golden_qwen3.json",
}


def config_json(golden):
    if "hf_config" in golden:
        return golden["hf_config"]
    c = golden["config"]
    if golden["family"] == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c["dim"],
                "n_layer": c["n_layers"], "n_head": c["n_heads"], "n_inner": c["hidden_dim"],
                "vocab_size": c["vocab_size"], "n_positions": c["max_seq_len"],
                "layer_norm_epsilon": c["norm_eps"], "activation_function": "gelu_new",
                "tie_word_embeddings": True, "torch_dtype": "float32"}
    assert c["rope_layout"] == "half_split", "Hugging Face LLaMA checkpoints are half-split"
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": c["dim"], "intermediate_size": c["hidden_dim"],
            "num_hidden_layers": c["n_layers"], "num_attention_heads": c["n_heads"],
            "num_key_value_heads": c["n_kv_heads"], "vocab_size": c["vocab_size"],
            "max_position_embeddings": c["max_seq_len"], "rms_norm_eps": c["norm_eps"],
            "rope_theta": c["rope_theta"], "tie_word_embeddings": c["tied_head"],
            "torch_dtype": "float32"}


def safetensors(tensors):
    """{name: {"shape", "data"}} as F32, in name order, laid out as the reference writer does."""
    header, body = {}, b""
    for name in sorted(tensors):
        t = tensors[name]
        data = struct.pack("<%df" % len(t["data"]), *t["data"])
        header[name] = {"dtype": "F32", "shape": t["shape"],
                        "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


def golden_logits(golden):
    """The base case's logits of batch row 0 (its real positions come first in slot order)."""
    batch = golden["batch"]
    length = batch["lengths"][0] if batch.get("lengths") else batch["seq"]
    logits = golden["cases"]["base"]["logits"]
    vocab = logits["shape"][1]
    lines = []
    for s in range(length):
        row = logits["data"][s * vocab:(s + 1) * vocab]
        lines.append(" ".join([str(s), str(batch["ids"][s])] + ["%.9g" % v for v in row]))
    return "\n".join(lines) + "\n"


def tokenizer_json(vocab_size):
    tokens = ["<unk>", "<s>", "</s>", "\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += ["\u2581t", "th"]
    assert len(tokens) == vocab_size, len(tokens)
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for i, t in enumerate(tokens[:3])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": False, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ["\u2581 t", "t h"]},
    }


def main():
    for family, file in FAMILIES.items():
        with open(os.path.join(DATA, file)) as f:
            golden = json.load(f)
        folder = os.path.join(DATA, "models", "tiny-" + family)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config_json(golden), f, indent=2)
            f.write("\n")
        with open(os.path.join(folder, "model.safetensors"), "wb") as f:
            f.write(safetensors(golden["tensors"]))
        with open(os.path.join(folder, "golden_logits.txt"), "w") as f:
            f.write(golden_logits(golden))
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(config_json(golden).get("vocab_size")), f, indent=1,
                      ensure_ascii=False)
            f.write("\n")
        print(folder)


if __name__ == "__main__":
    main()
