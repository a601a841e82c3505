#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Seeds are small files in each format: the small real assets of tests/data/ as they are, files
derived from the large real ones (a real vocabulary cut to its first few hundred entries, which
keeps ids, scores, types and merges consistent), and synthetic files that reach the branches the
real ones do not (F16/BF16/Q8_0 tensors, untied heads, LoRA adapters, ...). Standard library only.

    python3 tests/fuzz/make_seeds.py            # from the repository root

The fuzzers then grow and `-merge=1` minimises these folders; run.sh never writes to them.
"""

import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
ASSETS = os.path.join(ROOT, "..", "shared", "assets")  # the large real files, when beside the clone
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
SPLIT = b"\0SPLIT\0"  # softprompt_fuzz::kSplit


def put(target, name, data):
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(DATA, *parts), "rb") as f:
        return f.read()


def floats(n, scale=0.01, offset=0.0):
    return [offset + scale * ((i * 37) % 101 - 50) for i in range(n)]


# ---- safetensors ---------------------------------------------------------------------------------

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1, "F64": 8, "I64": 8}


def encode(dtype, values):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    if dtype == "I32":
        return struct.pack("<%di" % len(values), *[int(v * 100) for v in values])
    if dtype == "U8":
        return bytes(int(abs(v) * 100) % 256 for v in values)
    if dtype == "F64":
        return struct.pack("<%dd" % len(values), *values)
    raise ValueError(dtype)


def safetensors(tensors, metadata=None):
    """tensors: {name: (dtype, shape)}; laid out like the reference writer (wider dtypes first)."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    body = b""
    order = sorted(tensors.items(), key=lambda kv: (-DTYPE_SIZE[kv[1][0]], kv[0]))
    for name, (dtype, shape) in order:
        n = 1
        for d in shape:
            n *= d
        data = encode(dtype, floats(n))
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


def safetensors_seeds():
    put("safetensors", "tiny-gpt2-random.safetensors",
        read("models", "tiny-gpt2-random", "model.safetensors"))
    put("safetensors", "dtypes.safetensors", safetensors(
        {"a.f32": ("F32", [2, 3]), "b.f16": ("F16", [4]), "c.bf16": ("BF16", [2, 2]),
         "d.i32": ("I32", [3]), "e.u8": ("U8", [5]), "f.scalar": ("F32", []),
         "g.empty": ("F16", [0, 4]), "h.f64": ("F64", [2]), "i.rank3": ("F32", [1, 2, 2])},
        {"format": "pt"}))
    put("safetensors", "empty.safetensors", safetensors({}))


# ---- GGUF ----------------------------------------------------------------------------------------

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = \
    range(13)
SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
          FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


def gguf_str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("<Q", len(s)) + s


def gguf_value(t, v):
    if t == STRING:
        return gguf_str(v)
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def read_gguf_value(b, at, t):
    if t == STRING:
        n = struct.unpack_from("<Q", b, at)[0]
        return b[at + 8:at + 8 + n].decode(), at + 8 + n
    if t == ARRAY:
        et, n = struct.unpack_from("<IQ", b, at)
        at += 12
        items = []
        for _ in range(n):
            x, at = read_gguf_value(b, at, et)
            items.append(x)
        return (et, items), at
    fmt = SCALAR[t]
    return struct.unpack_from(fmt, b, at)[0], at + struct.calcsize(fmt)


def read_gguf_metadata(b):
    """The metadata pairs of a real GGUF file, in order: [(key, type, value)]."""
    _, _, _, n_kv = struct.unpack_from("<4sIQQ", b, 0)
    at, kv = 24, []
    for _ in range(n_kv):
        key, at = read_gguf_value(b, at, STRING)
        t = struct.unpack_from("<I", b, at)[0]
        v, at = read_gguf_value(b, at + 4, t)
        kv.append((key, t, v))
    return kv


def half(values):
    return struct.pack("<%de" % len(values), *values)


def q8_0(values):
    out = b""
    for b in range(0, len(values), 32):
        block = values[b:b + 32]
        d = max(abs(x) for x in block) / 127 or 1.0
        out += struct.pack("<e", d) + bytes((round(x / d)) & 0xFF for x in block)
    return out


GGML = {"F32": (0, lambda v: struct.pack("<%df" % len(v), *v)), "F16": (1, half),
        "Q8_0": (8, q8_0), "BF16": (30, lambda v: b"".join(struct.pack("<f", x)[2:] for x in v))}


def gguf(kv, tensors, alignment=32):
    """kv: [(key, type, value)]; tensors: [(name, ne, ggml type name[, values])], random values
    when none are given."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, t, v in kv:
        out += gguf_str(key) + struct.pack("<I", t) + gguf_value(t, v)
    data = b""
    for name, ne, tname, *values in tensors:
        n = 1
        for d in ne:
            n *= d
        blob = GGML[tname][1](values[0] if values else floats(n, 0.05, 0.1))
        data += b"\0" * ((alignment - len(data) % alignment) % alignment)
        out += gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", GGML[tname][0], len(data))
        data += blob
    out += b"\0" * ((alignment - len(out) % alignment) % alignment)
    return out + data


def llama_tensors(dim, hidden, layers, kv_dim, vocab, untied, types):
    t = [("token_embd.weight", [dim, vocab], types[0])]
    for i in range(layers):
        b = "blk.%d." % i
        t += [(b + "attn_norm.weight", [dim], "F32"), (b + "attn_q.weight", [dim, dim], types[1]),
              (b + "attn_k.weight", [dim, kv_dim], types[2]),
              (b + "attn_v.weight", [dim, kv_dim], types[3]),
              (b + "attn_output.weight", [dim, dim], types[1]),
              (b + "ffn_norm.weight", [dim], "F32"), (b + "ffn_gate.weight", [dim, hidden], "F16"),
              (b + "ffn_down.weight", [hidden, dim], "BF16"),
              (b + "ffn_up.weight", [dim, hidden], "Q8_0")]
    t.append(("output_norm.weight", [dim], "F32"))
    if untied:
        t.append(("output.weight", [dim, vocab], "F32"))
    return t


def gguf_seeds():
    # The real stories260K vocabulary (512 SentencePiece pieces with scores and types) over a tiny
    # model of the same family whose tensors use every type the reader converts.
    stories = read_gguf_metadata(read("models", "stories260K.gguf"))
    tokenizer_kv = [x for x in stories if x[0].startswith("tokenizer.")]
    vocab = len(dict((k, v) for k, _, v in tokenizer_kv)["tokenizer.ggml.tokens"][1])
    dim, hidden, heads, kv_heads = 32, 32, 4, 2
    llama_kv = [("general.architecture", STRING, "llama"), ("general.name", STRING, "tiny"),
                ("llama.embedding_length", UINT32, dim), ("llama.feed_forward_length", UINT32, hidden),
                ("llama.block_count", UINT32, 1), ("llama.attention.head_count", UINT32, heads),
                ("llama.attention.head_count_kv", UINT32, kv_heads),
                ("llama.context_length", UINT32, 64), ("llama.rope.dimension_count", UINT32, 8),
                ("llama.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
                ("llama.rope.freq_base", FLOAT32, 10000.0)]
    kv_dim = kv_heads * dim // heads
    put("gguf", "tiny-llama-stories-vocab.gguf",
        gguf(llama_kv + tokenizer_kv,
             llama_tensors(dim, hidden, 1, kv_dim, vocab, False, ["F16", "Q8_0", "BF16", "F32"])))
    put("gguf", "tiny-llama-untied.gguf",
        gguf(llama_kv + [("general.alignment", UINT32, 64),
                         ("tokenizer.ggml.model", STRING, "none")],
             llama_tensors(dim, hidden, 1, kv_dim, 40, True, ["F32", "F32", "F16", "Q8_0"]), 64))

    # Llama 3's RoPE scaling as llama.cpp stores it: one divisor per rotated pair.
    put("gguf", "tiny-llama-rope-freqs.gguf",
        gguf(llama_kv, llama_tensors(dim, hidden, 1, kv_dim, 40, False, ["F32"] * 4)
             + [("rope_freqs.weight", [4], "F32", [1.0, 1.5, 4.0, 8.0])]))
    # A tiny GPT-2: Conv1D projections stored [out x in], biases, learned positions.
    gpt2_kv = [("general.architecture", STRING, "gpt2"), ("gpt2.embedding_length", UINT32, dim),
               ("gpt2.feed_forward_length", UINT32, 4 * dim), ("gpt2.block_count", UINT32, 1),
               ("gpt2.attention.head_count", UINT32, heads), ("gpt2.context_length", UINT32, 16),
               ("gpt2.attention.layer_norm_epsilon", FLOAT32, 1e-5)]
    gpt2 = [("token_embd.weight", [dim, 40], "F32"), ("position_embd.weight", [dim, 16], "F16")]
    for name, ne in (("attn_norm", [dim]), ("attn_qkv", [dim, 3 * dim]),
                     ("attn_output", [dim, dim]), ("ffn_norm", [dim]),
                     ("ffn_up", [dim, 4 * dim]), ("ffn_down", [4 * dim, dim])):
        gpt2 += [("blk.0.%s.weight" % name, ne, "F32" if len(ne) == 1 else "Q8_0"),
                 ("blk.0.%s.bias" % name, [ne[-1]], "F32")]
    gpt2 += [("output_norm.weight", [dim], "F32"), ("output_norm.bias", [dim], "F32")]
    put("gguf", "tiny-gpt2.gguf", gguf(gpt2_kv, gpt2))

    # The real llama.cpp vocabularies cut to their first entries (GPT-2: token 256 + r is the
    # result of merge r, so 256 + n tokens and n merges stay consistent).
    for name, keep_tokens, keep_merges in (("ggml-vocab-llama-spm.gguf", 320, 0),
                                           ("ggml-vocab-gpt-2.gguf", 256 + 200, 200)):
        kv = []
        for key, t, v in read_gguf_metadata(read("tokenizers", "llama.cpp", name)):
            if t == ARRAY and key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                      "tokenizer.ggml.token_type"):
                v = (v[0], v[1][:keep_tokens])
            elif t == ARRAY and key == "tokenizer.ggml.merges":
                v = (v[0], v[1][:keep_merges])
            elif key.endswith("_token_id") and v >= keep_tokens:
                continue
            kv.append((key, t, v))
        put("gguf", name.replace(".gguf", "-cut.gguf"), gguf(kv, []))

    # Every metadata value type, nested arrays included.
    put("gguf", "metadata-types.gguf", gguf(
        [("u8", UINT8, 7), ("i8", INT8, -7), ("u16", UINT16, 700), ("i16", INT16, -700),
         ("u32", UINT32, 70000), ("i32", INT32, -70000), ("f32", FLOAT32, 0.5), ("b", BOOL, True),
         ("s", STRING, "text"), ("u64", UINT64, 2**40), ("i64", INT64, -2**40),
         ("f64", FLOAT64, 0.25), ("a.i32", ARRAY, (INT32, [1, -2, 3])),
         ("a.s", ARRAY, (STRING, ["x", "yz"])), ("a.b", ARRAY, (BOOL, [True, False])),
         ("a.a", ARRAY, (ARRAY, [(UINT8, [1, 2]), (FLOAT64, [0.5])]))],
        [("t.f32", [4, 2], "F32"), ("t.q8", [32, 1], "Q8_0")]))


# ---- llama2.c ------------------------------------------------------------------------------------

def llama2c_checkpoint(dim, hidden, layers, heads, kv_heads, vocab, seq, tied):
    hd = dim // heads
    kv = kv_heads * hd
    n = (vocab * dim + layers * dim + layers * dim * dim + 2 * layers * kv * dim +
         layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim + seq * hd +
         (0 if tied else vocab * dim))
    header = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab if tied else -vocab, seq)
    return header + struct.pack("<%df" % n, *floats(n))


def llama2c_tokenizer(extra):
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)] + extra
    out = struct.pack("<i", max(len(p) for p in pieces))
    for i, p in enumerate(pieces):
        out += struct.pack("<fi", -float(i), len(p)) + p
    return len(pieces), out


def llama2c_seeds():
    put("llama2c", "tiny-tied.bin", llama2c_checkpoint(8, 16, 1, 2, 1, 32, 4, True))
    put("llama2c", "tiny-untied.bin", llama2c_checkpoint(8, 12, 2, 2, 2, 24, 2, False))
    # The tokenizer target reads bytes 0-1 as the vocabulary size - 259 (see its source).
    put("llama2c_tokenizer", "tok512.bin", struct.pack("<H", 512 - 259) + read("tokenizers",
                                                                              "tok512.bin"))
    n, tok = llama2c_tokenizer([b" ", b"a", b"b", b" a", b"ab", b" ab", "\u00e9".encode()])
    put("llama2c_tokenizer", "small.bin", struct.pack("<H", n - 259) + tok)


# ---- config.json ---------------------------------------------------------------------------------

def hf_config_seeds():
    put("hf_config", "tiny-gpt2-random.json", read("models", "tiny-gpt2-random", "config.json"))
    put("hf_config", "llama.json", json.dumps(
        {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
         "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
         "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
         "rope_scaling": None, "head_dim": 8, "attention_bias": False, "mlp_bias": False},
        indent=2))
    put("hf_config", "mistral.json", json.dumps(
        {"model_type": "mistral", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 100, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
         "sliding_window": 1024}))


# ---- BPE -----------------------------------------------------------------------------------------

def gpt2_subset(n_merges):
    """The real GPT-2 vocabulary cut to the 256 byte tokens and the first n merges' results."""
    encoder = json.loads(read("tokenizers", "gpt2", "encoder.json"))
    lines = read("tokenizers", "gpt2", "vocab.bpe").decode().split("\n")
    merges = [l for l in lines[1:] if l][:n_merges]
    keep = {t: i for t, i in encoder.items() if i < 256 + n_merges}
    keep["<|endoftext|>"] = len(keep)
    return keep, [lines[0]] + merges


def bpe_seeds():
    vocab = read("models", "tiny-gpt2-random", "vocab.json")
    merges = read("models", "tiny-gpt2-random", "merges.txt")
    put("bpe_openai", "tiny-gpt2-random", vocab + SPLIT + merges)
    encoder, gpt2_merges = gpt2_subset(300)
    put("bpe_openai", "gpt2-cut", json.dumps(encoder).encode() + SPLIT +
        "\n".join(gpt2_merges).encode() + b"\n")

    def tokenizer_json(vocab, merges, pairs=False, **model):
        return json.dumps({
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>",
                              "special": True}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "model": dict({"type": "BPE", "dropout": None, "unk_token": None,
                           "continuing_subword_prefix": "", "end_of_word_suffix": "",
                           "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                           "merges": [m.split(" ") for m in merges] if pairs else merges},
                          **model)}, ensure_ascii=False)

    toy = json.loads(vocab)
    toy_merges = [l for l in merges.decode().split("\n")[1:] if l]
    put("bpe_hf_json", "tiny-gpt2-random.json", tokenizer_json(toy, toy_merges, unk_token="<unk>"))
    put("bpe_hf_json", "gpt2-cut.json", tokenizer_json(encoder, gpt2_merges[1:101]))
    put("hf_tokenizer", "gpt2-cut.json", tokenizer_json(encoder, gpt2_merges[1:101]))
    put("bpe_hf_json", "gpt2-cut-pairs.json",
        tokenizer_json(encoder, gpt2_merges[1:51], pairs=True, ignore_merges=True))


# ---- tokenizer.json and tokenizer.model ----------------------------------------------------------

def cut_tokenizer_json(path, keep_ids, max_merges=300, max_added=6):
    """A real tokenizer.json cut to ids below keep_ids, the merges among them and a few added
    tokens (renumbered after the vocabulary); normalizer, pre-tokenizer, post-processor and
    decoder stay as they are."""
    with open(path, encoding="utf-8") as f:
        root = json.load(f)
    model = root["model"]
    vocab = {t: i for t, i in model["vocab"].items() if i < keep_ids}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
        if len(merges) == max_merges:
            break
    model["vocab"], model["merges"] = vocab, merges
    added = [a for a in root["added_tokens"] if a["id"] < keep_ids]
    renumber = {}
    for a in root["added_tokens"]:
        if a["id"] >= keep_ids and len(renumber) < max_added:
            renumber[a["content"]] = keep_ids + len(renumber)
            added.append(dict(a, id=renumber[a["content"]]))
    root["added_tokens"] = added
    post = root.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [renumber.get(t, vocab.get(t, 0)) for t in special["tokens"]]
    return json.dumps(root, ensure_ascii=False, separators=(",", ":"))


def tokenizer_seeds():
    hf = os.path.join(ASSETS, "tokenizers", "hf")
    for name, keep in (("llama2", 600), ("llama3", 700), ("qwen3", 700)):
        path = os.path.join(hf, name, "tokenizer.json")
        if os.path.exists(path):
            put("hf_tokenizer", name + "-cut.json", cut_tokenizer_json(path, keep))
        else:
            print("make_seeds.py: %s not found, its seed is not rewritten" % path, file=sys.stderr)
    put("spm_model", "tok512.model", read("tokenizers", "tok512.model"))


# ---- adapters and training state -----------------------------------------------------------------

# The adapter target's model: LLaMA d 8, 2 layers, 2 heads, 1 KV head (Dkv 4).
D, LAYERS, KV_HEADS, DKV = 8, 2, 1, 4


def adapter(config, tensors):
    return json.dumps(config, indent=2).encode() + b"\n" + SPLIT + safetensors(tensors,
                                                                               {"format": "pt"})


def adapter_seeds():
    base = {"task_type": "CAUSAL_LM", "inference_mode": True, "base_model_name_or_path": None,
            "revision": None}
    prompt = dict(base, peft_type="PROMPT_TUNING", num_virtual_tokens=3, token_dim=D,
                  num_layers=LAYERS, num_attention_heads=2, num_transformer_submodules=1,
                  prompt_tuning_init="RANDOM", prompt_tuning_init_text=None,
                  tokenizer_name_or_path=None)
    put("adapter", "prompt_tuning", adapter(prompt, {"prompt_embeddings": ("F32", [3, D])}))
    put("adapter", "p_tuning", adapter(
        dict(prompt, peft_type="P_TUNING", encoder_reparameterization_type="MLP",
             encoder_hidden_size=16, encoder_num_layers=2, encoder_dropout=0.0),
        {"prompt_embeddings": ("F32", [3, D])}))
    put("adapter", "prefix_tuning", adapter(
        dict(base, peft_type="PREFIX_TUNING", num_virtual_tokens=2, token_dim=DKV,
             num_layers=LAYERS, num_attention_heads=KV_HEADS, num_transformer_submodules=1,
             encoder_hidden_size=D, prefix_projection=False),
        {"prompt_embeddings": ("F32", [2, LAYERS * 2 * DKV])}))
    lora = {}
    for layer in range(LAYERS):
        for proj, out in (("q_proj", D), ("v_proj", DKV)):
            m = "base_model.model.model.layers.%d.self_attn.%s" % (layer, proj)
            lora[m + ".lora_A.weight"] = ("F32", [2, D])
            lora[m + ".lora_B.weight"] = ("F32", [out, 2])
    put("adapter", "lora", adapter(
        dict(base, peft_type="LORA", r=2, lora_alpha=4, lora_dropout=0.0, bias="none",
             fan_in_fan_out=False, target_modules=["q_proj", "v_proj"], init_lora_weights=True),
        lora))
    # PEFT's patterns and a regular-expression target_modules: layer 1's q_proj at rank 3.
    patterned = {}
    for layer in range(LAYERS):
        for proj, out in (("q_proj", D), ("v_proj", DKV)):
            m = "base_model.model.model.layers.%d.self_attn.%s" % (layer, proj)
            r = 3 if (layer, proj) == (1, "q_proj") else 2
            patterned[m + ".lora_A.weight"] = ("F32", [r, D])
            patterned[m + ".lora_B.weight"] = ("F32", [out, r])
    put("adapter", "lora_patterns", adapter(
        dict(base, peft_type="LORA", r=2, lora_alpha=4, lora_dropout=0.0, bias="none",
             fan_in_fan_out=False, use_rslora=True,
             target_modules=r"model\.layers\.\d+\.self_attn\.(q|v)_proj",
             rank_pattern={"layers.1.self_attn.q_proj": 3}, alpha_pattern={"v_proj": 8},
             init_lora_weights=True),
        patterned))


def training_state_seeds():
    meta = {"format": "softprompt-training-state", "version": 1, "step": 12, "epoch": 1,
            "next_batch": 3, "best_eval_loss": 2.5, "evals_without_improvement": 1,
            "optimizer_kind": "adamw", "optimizer_scalars": {"t": 12.0, "lr": 0.001},
            "param_order": ["prompt.embeddings", "encoder.w"],
            "optimizer_order": ["m/prompt.embeddings", "v/prompt.embeddings"], "method": "prompt"}
    tensors = {"param/prompt.embeddings": ("F32", [3, 4]), "param/encoder.w": ("F32", [4]),
               "best/prompt.embeddings": ("F32", [3, 4]),
               "optimizer/m/prompt.embeddings": ("F32", [3, 4]),
               "optimizer/v/prompt.embeddings": ("F32", [3, 4])}
    put("training_state", "adamw.safetensors",
        safetensors(tensors, {"format": "pt", "softprompt": json.dumps(meta)}))
    meta.update(best_eval_loss="inf", optimizer_kind="sgd", optimizer_scalars={},
                optimizer_order=[], param_order=["prompt.embeddings"])
    put("training_state", "sgd.safetensors",
        safetensors({"param/prompt.embeddings": ("F32", [2, 2])},
                    {"format": "pt", "softprompt": json.dumps(meta)}))


# ---- datasets ------------------------------------------------------------------------------------

def dataset_seeds():
    put("dataset", "records.jsonl",
        '{"text": "Once upon a time", "label": "ham", "id": 3}\n\n'
        '{"text": "caf\\u00e9 \\n tab\\t", "label": "spam", "score": 0.5, "ok": true, "x": null}\n'
        '  \r\n{"subject": "no text field", "nested": {"a": [1, 2]}}\n')
    put("dataset", "records.tsv",
        "text\tlabel\r\nOnce upon a time\tham\nline\\nbreak and \\t tab \\\\ slash\tspam\n\n"
        "short\tham\r\n")


def main():
    for make in (safetensors_seeds, gguf_seeds, llama2c_seeds, hf_config_seeds, bpe_seeds,
                 tokenizer_seeds, adapter_seeds, training_state_seeds, dataset_seeds):
        make()
    total = 0
    for folder, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    print("seed corpora in %s: %d bytes" % (OUT, total), file=sys.stderr)


if __name__ == "__main__":
    main()
