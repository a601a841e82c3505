#!/usr/bin/python3
# make_peft_fixtures.py — PEFT adapter folders in the bytes PEFT writes, and their float64 logits.
#
# For the tiny GPT-2 (GPT2LMHeadModel) and LLaMA (LlamaForCausalLM, GQA 4/2) models of
# tests/data/golden_gpt2.json and golden_llama_gqa.json, writes one folder per method under
# tests/data/peft/<model>_<method>/, each as PEFT 0.19.1's save_pretrained leaves it:
#   adapter_config.json        the config's to_dict(), json.dumps(indent=2, sort_keys=True)
#   adapter_model.safetensors  what safetensors.torch.save_file writes: an 8-byte little-endian
#                              header length, a compact JSON header with "__metadata__"
#                              {"format": "pt"} first and the tensors in name order (one dtype:
#                              F32), padded with spaces to a multiple of 8, then the data in the
#                              same order; tensor names as get_peft_model_state_dict gives them
# and tests/data/peft/expected.json: for each folder, its golden file, the family and the logits of
# the golden batch's real positions with the adapter, from make_golden.py's float64 forward pass
# (written from Hugging Face's modeling code, not from softprompt). LoRA is applied by adding
# s·B·A to each adapted weight (s = alpha/r, or alpha/sqrt(r) with use_rslora; a module's rank and
# alpha from rank_pattern / alpha_pattern when one matches it), the values rounded to float32 first
# as the file stores them. P-tuning is stored as PEFT stores it in inference mode: the prompt
# encoder's output, which serves as a soft prompt.
#
# Regenerate, from the repository root, with Debian's PyTorch (python3-torch):
#   /usr/bin/python3 tests/reference/make_peft_fixtures.py

import json
import math
import os
import re
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as ref  # noqa: E402

REPO = ref.REPO
DATA = os.path.join(REPO, "tests", "data")
OUT = os.path.join(DATA, "peft")
PEFT_VERSION = "0.19.1"
P = 3


def load_golden(name):
    with open(os.path.join(DATA, name)) as f:
        j = json.load(f)
    W = {k: torch.tensor(v["data"], dtype=torch.float64).reshape(v["shape"])
         for k, v in j["tensors"].items()}
    cfg = dict(j["config"])
    b = j["batch"]
    ids = torch.tensor(b["ids"]).reshape(b["batch"], b["seq"])
    return j["family"], cfg, W, ids, b["lengths"]


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def safetensors_bytes(tensors):
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in names:
        t = tensors[name].to(torch.float32).contiguous()
        blob = struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def base_fields(peft_type, base_model):
    return {"auto_mapping": None, "base_model_name_or_path": base_model, "inference_mode": True,
            "peft_type": peft_type, "peft_version": PEFT_VERSION, "revision": None,
            "task_type": "CAUSAL_LM"}


def prompt_learning_fields(peft_type, base_model, cfg):
    d = base_fields(peft_type, base_model)
    d.update({"num_attention_heads": cfg["n_heads"], "num_layers": cfg["n_layers"],
              "num_transformer_submodules": 1, "num_virtual_tokens": P, "token_dim": cfg["dim"]})
    return d


def lora_fields(base_model, r, alpha, targets, fan_in_fan_out, rslora=False, rank_pattern=None,
                alpha_pattern=None):
    d = base_fields("LORA", base_model)
    d.update({"alora_invocation_tokens": None, "alpha_pattern": alpha_pattern or {},
              "arrow_config": None, "bias": "none", "corda_config": None,
              "ensure_weight_tying": False, "eva_config": None, "exclude_modules": None,
              "fan_in_fan_out": fan_in_fan_out, "init_lora_weights": True,
              "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
              "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False, "lora_dropout": 0.0,
              "lora_ga_config": None, "megatron_config": None, "megatron_core": "megatron.core",
              "modules_to_save": None, "qalora_group_size": 16, "r": r,
              "rank_pattern": rank_pattern or {}, "target_modules": targets,
              "target_parameters": None, "trainable_token_indices": None, "use_bdlora": None,
              "use_dora": False, "use_qalora": False, "use_rslora": rslora})
    return d


def pattern_value(patterns, name, default):
    # PEFT's get_pattern_key: the first key k with re.match(rf"(.*\.)?({k})$", name).
    for k, v in patterns.items():
        if re.match(r"(.*\.)?(%s)$" % k, name):
            return v
    return default


def lora_modules(family, cfg, select):
    """(full module name, weight name in W, in, out) of the adapted projections."""
    d, hd = cfg["dim"], ref.head_dim(cfg)
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    out = []
    for l in range(cfg["n_layers"]):
        if family == "gpt2":
            mods = [(f"transformer.h.{l}.attn.c_attn", f"h.{l}.attn.c_attn.weight", d, 3 * d),
                    (f"transformer.h.{l}.attn.c_proj", f"h.{l}.attn.c_proj.weight", d, d)]
        else:
            p = f"model.layers.{l}.self_attn."
            mods = [(p + "q_proj", p + "q_proj.weight", d, q), (p + "k_proj", p + "k_proj.weight", d, kv),
                    (p + "v_proj", p + "v_proj.weight", d, kv), (p + "o_proj", p + "o_proj.weight", q, d)]
        out += [m for m in mods if select(m[0])]
    return out


def write(folder, config, tensors, golden, family, logits, expected):
    path = os.path.join(OUT, folder)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))
    with open(os.path.join(path, "adapter_model.safetensors"), "wb") as f:
        f.write(safetensors_bytes(tensors))
    expected[folder] = {"golden": golden, "family": family, "logits": ref.T(logits)}
    print(f"  {folder}: {len(tensors)} tensors")


def lora_case(name, golden, family, cfg, W, ids, lengths, base_model, r, alpha, targets,
              select, g, expected, rslora=False, rank_pattern=None, alpha_pattern=None):
    merged = dict(W)
    tensors = {}
    for full, weight, n_in, n_out in lora_modules(family, cfg, select):
        rank = pattern_value(rank_pattern or {}, full, r)
        a_ = pattern_value(alpha_pattern or {}, full, alpha)
        A = f32(torch.randn(rank, n_in, generator=g) / math.sqrt(n_in))
        B = f32(torch.randn(n_out, rank, generator=g))
        s = a_ / (math.sqrt(rank) if rslora else rank)
        delta = s * (B @ A)  # [out, in]
        # GPT-2's Conv1D stores [in, out]; LLaMA's Linear [out, in].
        merged[weight] = W[weight] + (delta.T if family == "gpt2" else delta)
        tensors["base_model.model." + full + ".lora_A.weight"] = A
        tensors["base_model.model." + full + ".lora_B.weight"] = B
    config = lora_fields(base_model, r, alpha, targets, family == "gpt2", rslora, rank_pattern,
                         alpha_pattern)
    logits = ref.forward_batched(merged, cfg, family, ids, lengths)
    write(name, config, tensors, golden, family, logits, expected)


def model_cases(golden, model_name, expected, seed):
    family, cfg, W, ids, lengths = load_golden(golden)
    g = torch.Generator().manual_seed(seed)
    base_model = "tiny-" + model_name
    kd, Hkv = ref.kv_dim(cfg), cfg["n_kv_heads"]
    run = lambda **kw: ref.forward_batched(W, cfg, family, ids, lengths, **kw)  # noqa: E731

    prompt = f32(torch.randn(P, cfg["dim"], generator=g))
    config = prompt_learning_fields("PROMPT_TUNING", base_model, cfg)
    config.update({"prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None,
                   "tokenizer_kwargs": None, "tokenizer_name_or_path": None})
    write(f"{model_name}_prompt_tuning", config, {"prompt_embeddings": prompt}, golden, family,
          run(prompt=prompt), expected)

    # P-tuning in inference mode: the stored tensor is the MLP prompt encoder's output.
    h = 8
    emb = torch.randn(P, cfg["dim"], generator=g)
    w1, w2 = torch.randn(h, cfg["dim"], generator=g) * 0.3, torch.randn(h, h, generator=g) * 0.3
    w3 = torch.randn(cfg["dim"], h, generator=g) * 0.3
    encoded = f32(torch.relu(torch.relu(emb @ w1.T) @ w2.T) @ w3.T)
    config = prompt_learning_fields("P_TUNING", base_model, cfg)
    config.update({"encoder_dropout": 0.0, "encoder_hidden_size": h, "encoder_num_layers": 2,
                   "encoder_reparameterization_type": "MLP"})
    write(f"{model_name}_p_tuning", config, {"prompt_embeddings": encoded}, golden, family,
          run(prompt=encoded), expected)

    # Prefix tuning, stored as a plain prefix [P, L*2*Dkv]; PEFT sizes it by the key/value width.
    prefix = f32(torch.randn(P, cfg["n_layers"] * 2 * kd, generator=g))
    config = prompt_learning_fields("PREFIX_TUNING", base_model, cfg)
    config.update({"encoder_hidden_size": cfg["dim"], "num_attention_heads": Hkv,
                   "prefix_projection": False, "token_dim": kd})
    write(f"{model_name}_prefix_tuning", config, {"prompt_embeddings": prefix}, golden, family,
          run(prefix=prefix), expected)

    if family == "gpt2":
        lora_case(f"{model_name}_lora", golden, family, cfg, W, ids, lengths, base_model, 2, 4,
                  ["c_attn"], lambda m: m.endswith(".c_attn"), g, expected)
        lora_case(f"{model_name}_lora_patterns", golden, family, cfg, W, ids, lengths, base_model,
                  2, 2, r"transformer\.h\.(0\.attn\.c_attn|\d+\.attn\.c_proj)",
                  lambda m: re.fullmatch(r"transformer\.h\.(0\.attn\.c_attn|\d+\.attn\.c_proj)", m)
                  is not None, g, expected, rslora=True, rank_pattern={"h.1.attn.c_proj": 4},
                  alpha_pattern={"c_attn": 6})
    else:
        lora_case(f"{model_name}_lora", golden, family, cfg, W, ids, lengths, base_model, 2, 4,
                  ["q_proj", "v_proj"], lambda m: m.endswith(("q_proj", "v_proj")), g, expected)
        regex = r"model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"
        lora_case(f"{model_name}_lora_patterns", golden, family, cfg, W, ids, lengths, base_model,
                  2, 4, regex, lambda m: re.fullmatch(regex, m) is not None, g, expected,
                  rslora=True, rank_pattern={"layers.1.self_attn.q_proj": 3, "o_proj": 1},
                  alpha_pattern={"v_proj": 8})


def main():
    torch.set_default_dtype(torch.float64)
    print(os.path.relpath(OUT, REPO) + ":")
    expected = {}
    model_cases("golden_gpt2.json", "gpt2", expected, seed=31)
    model_cases("golden_llama_gqa.json", "llama", expected, seed=32)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
