#!/usr/bin/python3
# make_golden.py — independent float64 PyTorch reference for softprompt's model tests.
#
# Builds three tiny randomly initialised decoder-only transformers, written out by hand following
# Hugging Face's GPT2 and Llama modeling code (no `transformers` / `peft`), and records, for one
# right-padded batch, the logits and mean cross-entropy loss of:
#   base   - the frozen model,
#   prompt - PEFT prompt tuning (P virtual-token embeddings before the first token, positions 0..P-1),
#   prefix - PEFT prefix tuning (P per-layer key/value rows prepended as-is, no RoPE; real tokens at
#            positions P..),
# plus d loss / d prompt and d loss / d prefix.
#
# Outputs (overwritten):
#   tests/data/golden_gpt2.json              GPT-2 (LayerNorm, gelu_new, learned positions, tied head)
#   tests/data/golden_llama_gqa.json         LLaMA, GQA 4/2, RoPE half-split (HF), untied head
#   tests/data/golden_llama_interleaved.json LLaMA, MQA 4/1, RoPE interleaved pairs (GGUF), tied head
#   tests/data/golden_llama3.json            Llama 3.x: rope_scaling "llama3" (all three frequency
#                                            bands hit), MQA 2/1, head_dim 8, tied head
#   tests/data/golden_qwen2.json             Qwen2: biases on q/k/v, GQA 4/2, tied head
#   tests/data/golden_qwen3.json             Qwen3: RMSNorm of each q/k head before RoPE, head_dim 8
#                                            with hidden 16 and 4 heads (q width 32), GQA 4/2, untied
#   tests/data/golden_mistral.json           Mistral: plain LLaMA maths with a sliding window (16)
#                                            longer than every sequence here, GQA 4/2, untied
#
# Regenerate, from the repository root, with Debian's PyTorch (python3-torch):
#   /usr/bin/python3 tests/reference/make_golden.py
#
# Deterministic: every tensor comes from a torch.Generator seeded per file. Before writing, the
# script checks itself: (1) the batched/masked implementation agrees with a per-row literal one
# (prompt: one concatenated sequence [prompt; tokens] with positions 0..; prefix: keys/values
# concatenated per layer) to 1e-12, (2) prompt and prefix with P = 0 reproduce the base case, and
# (3) the prompt and prefix gradients pass torch.autograd.gradcheck and a central finite difference.
#
# JSON schema (same for all files; T = {"shape": [...], "data": [row-major flat list]}):
#   family  "gpt2" | "llama"
#   config  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len, norm_eps,
#           rope_theta, tied_head, rope_layout ("half_split" | "interleaved" | "none"), and for
#           the newer families head_dim, qkv_bias, qk_norm, rope_scaling, sliding_window
#   hf_config (newer families only) the config.json transformers would read for this model
#   tensors Hugging Face names -> T (GPT-2 Conv1D weights [in, out]; LLaMA Linear weights [out, in])
#   batch   batch B, seq S, ids [B*S] (right-padded with 0), lengths [B], targets [B*S] (already
#           shifted: the token position s must predict; -100 = ignored)
#   cases   base   {logits, loss}
#           prompt {num_virtual_tokens, prompt [P, dim], logits, loss, grad [P, dim]}
#           prefix {num_virtual_tokens, prefix [P, n_layers*2*kv_dim], logits, loss, grad}
#   logits hold the real positions only ([sum(lengths), V], row b then position s); loss is the mean
#   cross-entropy over targets >= 0. Floats are Python's repr (shortest round-trip double).

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

IGNORE = -100
NUM_VIRTUAL = 3
BATCH, SEQ = 3, 5
LENGTHS = [5, 3, 4]

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT_DIR = os.path.join(REPO, "tests", "data")


# --------------------------------------------------------------------------------------------------
# Configs and random weights
# --------------------------------------------------------------------------------------------------

def make_config(family, n_kv_heads, hidden_dim, tied, layout):
    return {
        "dim": 16,
        "hidden_dim": hidden_dim,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": n_kv_heads,
        "vocab_size": 32,
        "max_seq_len": 64,
        "norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tied_head": tied,
        "rope_layout": layout,
    }


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["dim"] // cfg["n_heads"]


def kv_dim(cfg):
    return cfg["n_kv_heads"] * head_dim(cfg)


class Rand:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, shape, std):
        return torch.randn(*shape, generator=self.g) * std

    def ints(self, n, hi):
        return torch.randint(0, hi, (n,), generator=self.g)


def init_gpt2(cfg, r):
    d, V, L, hid = cfg["dim"], cfg["vocab_size"], cfg["n_layers"], cfg["hidden_dim"]
    W = {}
    W["wte.weight"] = r.normal([V, d], 1.0)
    W["wpe.weight"] = r.normal([cfg["max_seq_len"], d], 1.0)
    for l in range(L):
        p = f"h.{l}."
        W[p + "ln_1.weight"] = 1.0 + r.normal([d], 0.1)
        W[p + "ln_1.bias"] = r.normal([d], 0.1)
        W[p + "attn.c_attn.weight"] = r.normal([d, 3 * d], 0.2)
        W[p + "attn.c_attn.bias"] = r.normal([3 * d], 0.1)
        W[p + "attn.c_proj.weight"] = r.normal([d, d], 0.2)
        W[p + "attn.c_proj.bias"] = r.normal([d], 0.1)
        W[p + "ln_2.weight"] = 1.0 + r.normal([d], 0.1)
        W[p + "ln_2.bias"] = r.normal([d], 0.1)
        W[p + "mlp.c_fc.weight"] = r.normal([d, hid], 0.2)
        W[p + "mlp.c_fc.bias"] = r.normal([hid], 0.1)
        W[p + "mlp.c_proj.weight"] = r.normal([hid, d], 0.2)
        W[p + "mlp.c_proj.bias"] = r.normal([d], 0.1)
    W["ln_f.weight"] = 1.0 + r.normal([d], 0.1)
    W["ln_f.bias"] = r.normal([d], 0.1)
    return W


def init_llama(cfg, r):
    d, V, L, hid = cfg["dim"], cfg["vocab_size"], cfg["n_layers"], cfg["hidden_dim"]
    H, Hkv, hd = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    W = {}
    W["model.embed_tokens.weight"] = r.normal([V, d], 1.0)
    for l in range(L):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1.0 + r.normal([d], 0.1)
        W[p + "self_attn.q_proj.weight"] = r.normal([H * hd, d], 0.2)
        W[p + "self_attn.k_proj.weight"] = r.normal([Hkv * hd, d], 0.2)
        W[p + "self_attn.v_proj.weight"] = r.normal([Hkv * hd, d], 0.2)
        if cfg.get("qkv_bias"):
            W[p + "self_attn.q_proj.bias"] = r.normal([H * hd], 0.3)
            W[p + "self_attn.k_proj.bias"] = r.normal([Hkv * hd], 0.3)
            W[p + "self_attn.v_proj.bias"] = r.normal([Hkv * hd], 0.3)
        if cfg.get("qk_norm"):
            W[p + "self_attn.q_norm.weight"] = 1.0 + r.normal([hd], 0.2)
            W[p + "self_attn.k_norm.weight"] = 1.0 + r.normal([hd], 0.2)
        W[p + "self_attn.o_proj.weight"] = r.normal([d, H * hd], 0.2)
        W[p + "post_attention_layernorm.weight"] = 1.0 + r.normal([d], 0.1)
        W[p + "mlp.gate_proj.weight"] = r.normal([hid, d], 0.2)
        W[p + "mlp.up_proj.weight"] = r.normal([hid, d], 0.2)
        W[p + "mlp.down_proj.weight"] = r.normal([d, hid], 0.2)
    W["model.norm.weight"] = 1.0 + r.normal([d], 0.1)
    if not cfg["tied_head"]:
        W["lm_head.weight"] = r.normal([V, d], 0.2)
    return W


def make_batch(cfg, r):
    V = cfg["vocab_size"]
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long)
    targets = torch.full((BATCH, SEQ), IGNORE, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = r.ints(n, V)
        for s in range(n - 1):
            targets[b, s] = ids[b, s + 1]
    # One real, non-final position is ignored too (row 0, position 1).
    targets[0, 1] = IGNORE
    return ids, targets


# --------------------------------------------------------------------------------------------------
# Building blocks (Hugging Face semantics)
# --------------------------------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance, as torch.nn.LayerNorm
    return (x - mu) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def inv_freq_of(cfg, hd):
    """[hd/2] RoPE frequencies, rescaled as HF's ROPE_INIT_FUNCTIONS do (vectorised form)."""
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    sc = cfg.get("rope_scaling")
    if sc is None:
        return inv_freq
    if sc["rope_type"] == "linear":
        return inv_freq / sc["factor"]
    assert sc["rope_type"] == "llama3"
    factor, low, high = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    old = sc["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def check_rope_scaling(cfg, hd):
    """The Llama 3 rule written per frequency, as in Meta's reference apply_scaling."""
    sc = cfg.get("rope_scaling")
    if sc is None or sc["rope_type"] != "llama3":
        return
    base = [1.0 / (cfg["rope_theta"] ** (i / hd)) for i in range(0, hd, 2)]
    out, bands = [], set()
    for f in base:
        wavelen = 2 * math.pi / f
        if wavelen < sc["original_max_position_embeddings"] / sc["high_freq_factor"]:
            out.append(f)
            bands.add("high")
        elif wavelen > sc["original_max_position_embeddings"] / sc["low_freq_factor"]:
            out.append(f / sc["factor"])
            bands.add("low")
        else:
            s = (sc["original_max_position_embeddings"] / wavelen - sc["low_freq_factor"]) / (
                sc["high_freq_factor"] - sc["low_freq_factor"])
            out.append((1 - s) * f / sc["factor"] + s * f)
            bands.add("medium")
    assert bands == {"high", "medium", "low"}, f"llama3 scaling: only bands {bands} are hit"
    check_close("llama3 rope scaling vs per-frequency form", inv_freq_of(cfg, hd),
                torch.tensor(out), 1e-15)


def rope(x, pos, cfg):
    """x: [..., T, hd]; pos: [T] absolute positions. Returns x rotated."""
    hd = x.shape[-1]
    inv_freq = inv_freq_of(cfg, hd)  # [hd/2]
    ang = pos.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    if cfg["rope_layout"] == "half_split":
        # HF: emb = cat(freqs, freqs); q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x2, x1)
        cos2 = torch.cat([cos, cos], -1)
        sin2 = torch.cat([sin, sin], -1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return x * cos2 + rot * sin2
    if cfg["rope_layout"] == "interleaved":
        # llama2.c / GGUF: pair (2i, 2i+1) rotated by pos * theta^(-2i/hd)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y0 = x0 * cos - x1 * sin
        y1 = x0 * sin + x1 * cos
        return torch.stack([y0, y1], -1).flatten(-2)
    raise ValueError(cfg["rope_layout"])


def check_rope(cfg):
    """RoPE cross-checks against formulations written differently from rope()."""
    hd = head_dim(cfg)
    g = torch.Generator().manual_seed(99)
    x = torch.randn(3, 7, hd, generator=g)
    pos = torch.arange(7) + 2
    check_rope_scaling(cfg, hd)
    freqs = inv_freq_of(cfg, hd)
    ang = torch.outer(pos.double(), freqs)
    if cfg["rope_layout"] == "interleaved":
        # Meta / llama2.c style: view pairs as complex numbers and multiply by e^{i*angle}.
        xc = torch.view_as_complex(x.reshape(3, 7, hd // 2, 2).contiguous())
        ref = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).reshape(3, 7, hd)
    else:
        # Half-split is interleaved after the permutation (0, hd/2, 1, hd/2+1, ...).
        perm = torch.stack([torch.arange(hd // 2), torch.arange(hd // 2) + hd // 2], -1).flatten()
        xc = torch.view_as_complex(x[..., perm].reshape(3, 7, hd // 2, 2).contiguous())
        yi = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).reshape(3, 7, hd)
        ref = torch.empty_like(yi)
        ref[..., perm] = yi
    check_close(f"rope {cfg['rope_layout']} vs complex form", rope(x, pos, cfg), ref, 1e-14)


def split_prefix(prefix, cfg, l):
    """prefix: [P, L*2*kv_dim] -> keys, values of layer l, each [Hkv, P, hd]."""
    P = prefix.shape[0]
    kd, Hkv, hd = kv_dim(cfg), cfg["n_kv_heads"], head_dim(cfg)
    k = prefix[:, (2 * l) * kd:(2 * l + 1) * kd].reshape(P, Hkv, hd).transpose(0, 1)
    v = prefix[:, (2 * l + 1) * kd:(2 * l + 2) * kd].reshape(P, Hkv, hd).transpose(0, 1)
    return k, v


def embed(W, family, ids):
    return (W["wte.weight"] if family == "gpt2" else W["model.embed_tokens.weight"])[ids]


def head(W, cfg, family, x):
    if family == "gpt2":
        x = layer_norm(x, W["ln_f.weight"], W["ln_f.bias"], cfg["norm_eps"])
        return x @ W["wte.weight"].T
    x = rms_norm(x, W["model.norm.weight"], cfg["norm_eps"])
    w = W["model.embed_tokens.weight"] if cfg["tied_head"] else W["lm_head.weight"]
    return x @ w.T


def mlp(W, cfg, family, l, x):
    if family == "gpt2":
        p = f"h.{l}."
        h = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], cfg["norm_eps"])
        h = gelu_new(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        return x + h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    p = f"model.layers.{l}."
    h = rms_norm(x, W[p + "post_attention_layernorm.weight"], cfg["norm_eps"])
    h = F.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
    return x + h @ W[p + "mlp.down_proj.weight"].T


def qkv(W, cfg, family, l, x, pos):
    """x: [..., T, d] -> normalised-input projections q [..., H, T, hd], k/v [..., Hkv, T, hd]
    (RoPE applied to q and k for LLaMA)."""
    d, H, Hkv, hd = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    T = x.shape[-2]
    lead = x.shape[:-2]
    if family == "gpt2":
        p = f"h.{l}."
        h = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], cfg["norm_eps"])
        y = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = y[..., :d], y[..., d:2 * d], y[..., 2 * d:]
    else:
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], cfg["norm_eps"])
        q = h @ W[p + "self_attn.q_proj.weight"].T
        k = h @ W[p + "self_attn.k_proj.weight"].T
        v = h @ W[p + "self_attn.v_proj.weight"].T
        if cfg.get("qkv_bias"):  # Qwen2: nn.Linear(bias=True) for q, k, v
            q = q + W[p + "self_attn.q_proj.bias"]
            k = k + W[p + "self_attn.k_proj.bias"]
            v = v + W[p + "self_attn.v_proj.bias"]
    q = q.reshape(*lead, T, H, hd).transpose(-3, -2)
    k = k.reshape(*lead, T, Hkv, hd).transpose(-3, -2)
    v = v.reshape(*lead, T, Hkv, hd).transpose(-3, -2)
    if family == "llama" and cfg.get("qk_norm"):  # Qwen3: q_norm/k_norm over hd, before RoPE
        q = rms_norm(q, W[p + "self_attn.q_norm.weight"], cfg["norm_eps"])
        k = rms_norm(k, W[p + "self_attn.k_norm.weight"], cfg["norm_eps"])
    if family == "llama":
        q = rope(q, pos, cfg)
        k = rope(k, pos, cfg)
    return q, k, v


def out_proj(W, family, l, a):
    if family == "gpt2":
        p = f"h.{l}."
        return a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
    return a @ W[f"model.layers.{l}.self_attn.o_proj.weight"].T


# --------------------------------------------------------------------------------------------------
# Main implementation: whole padded batch at once, boolean attention mask, repeat_kv
# --------------------------------------------------------------------------------------------------

def forward_batched(W, cfg, family, ids, lengths, prompt=None, prefix=None):
    """Returns logits of the real positions only, [sum(lengths), V]."""
    assert prompt is None or prefix is None
    B, S = ids.shape
    H, Hkv, hd = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    lens = torch.tensor(lengths)
    x = embed(W, family, ids)  # [B, S, d]
    if prompt is not None:
        P = prompt.shape[0]
        x = torch.cat([prompt.unsqueeze(0).expand(B, P, cfg["dim"]), x], 1)  # [B, P+S, d]
        pos = torch.arange(P + S)
        n_past = 0  # keys come only from the sequence itself
        q_key_index = torch.arange(P + S)  # query i is key i
        real_offset = P
    elif prefix is not None:
        P = prefix.shape[0]
        pos = torch.arange(P, P + S)
        n_past = P
        q_key_index = torch.arange(P, P + S)  # query i is key P+i (after the prefix)
        real_offset = 0
    else:
        P = 0
        pos = torch.arange(S)
        n_past = 0
        q_key_index = torch.arange(S)
        real_offset = 0
    T = x.shape[1]
    if family == "gpt2":
        x = x + W["wpe.weight"][pos]
    # Key validity over the full key axis (virtual / prefix entries always valid, padding never).
    nk = n_past + T
    kidx = torch.arange(nk)
    # for prompt: keys 0..P-1 virtual, P.. real token (kidx-P); prefix: 0..P-1 prefix, P.. token.
    key_valid = (kidx[None, :] < P) | ((kidx[None, :] - P) < lens[:, None])  # [B, nk]
    causal = kidx[None, :] <= q_key_index[:, None]  # [T, nk]
    mask = causal[None, :, :] & key_valid[:, None, :]  # [B, T, nk]
    mask = mask[:, None, :, :]  # [B, 1, T, nk]
    scale = 1.0 / math.sqrt(hd)
    for l in range(cfg["n_layers"]):
        q, k, v = qkv(W, cfg, family, l, x, pos)  # [B, H, T, hd], [B, Hkv, T, hd]
        if prefix is not None:
            pk, pv = split_prefix(prefix, cfg, l)  # [Hkv, P, hd], as-is, no RoPE
            k = torch.cat([pk.unsqueeze(0).expand(B, -1, -1, -1), k], 2)
            v = torch.cat([pv.unsqueeze(0).expand(B, -1, -1, -1), v], 2)
        # HF repeat_kv: kv head j is shared by query heads j*g .. j*g+g-1
        g = H // Hkv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        s = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, nk]
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, -1) @ v  # [B, H, T, hd]
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + out_proj(W, family, l, a)
        x = mlp(W, cfg, family, l, x)
    logits = head(W, cfg, family, x)  # [B, T, V]
    rows = [logits[b, real_offset:real_offset + n] for b, n in enumerate(lengths)]
    return torch.cat(rows, 0)


# --------------------------------------------------------------------------------------------------
# Literal implementation: one row at a time, no padding, explicit per-head loop
# --------------------------------------------------------------------------------------------------

def forward_literal_row(W, cfg, family, tokens, prompt=None, prefix=None):
    """tokens: [n] real ids of one row. Prompt: the sequence is literally [prompt; embeddings] with
    positions 0..P+n-1 and plain causal attention; prefix: per-layer keys/values are literally
    [prefix_k; k] with the n queries at positions P..P+n-1."""
    H, Hkv, hd = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    x = embed(W, family, tokens)  # [n, d]
    n = x.shape[0]
    P = 0
    if prompt is not None:
        P = prompt.shape[0]
        x = torch.cat([prompt, x], 0)
        pos = torch.arange(P + n)
    elif prefix is not None:
        P = prefix.shape[0]
        pos = torch.arange(P, P + n)
    else:
        pos = torch.arange(n)
    T = x.shape[0]
    if family == "gpt2":
        x = x + W["wpe.weight"][pos]
    group = H // Hkv
    for l in range(cfg["n_layers"]):
        q, k, v = qkv(W, cfg, family, l, x, pos)  # [H, T, hd], [Hkv, T, hd]
        past = 0
        if prefix is not None:
            pk, pv = split_prefix(prefix, cfg, l)
            k = torch.cat([pk, k], 1)
            v = torch.cat([pv, v], 1)
            past = P
        heads = []
        for h in range(H):
            kv = h // group
            out = []
            for i in range(T):
                kk = k[kv, : past + i + 1]  # every key up to and including this query
                vv = v[kv, : past + i + 1]
                w = torch.softmax((kk @ q[h, i]) / math.sqrt(hd), 0)
                out.append(w @ vv)
            heads.append(torch.stack(out, 0))  # [T, hd]
        a = torch.cat(heads, -1)  # [T, H*hd]
        x = x + out_proj(W, family, l, a)
        x = mlp(W, cfg, family, l, x)
    logits = head(W, cfg, family, x)
    return logits[T - n:]


def forward_literal(W, cfg, family, ids, lengths, prompt=None, prefix=None):
    return torch.cat([forward_literal_row(W, cfg, family, ids[b, :n], prompt, prefix)
                      for b, n in enumerate(lengths)], 0)


# --------------------------------------------------------------------------------------------------

def real_targets(targets, lengths):
    return torch.cat([targets[b, :n] for b, n in enumerate(lengths)], 0)


def loss_of(logits, tgt):
    keep = tgt >= 0
    logp = torch.log_softmax(logits[keep], -1)
    return -logp.gather(1, tgt[keep][:, None]).mean()


def T(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def check_close(name, a, b, tol=1e-12):
    err = (a - b).abs().max().item() if a.numel() else 0.0
    print(f"  check {name}: max |diff| = {err:.3e}")
    assert a.shape == b.shape and err <= tol, f"{name}: {err} > {tol}"


def build(path, family, cfg, seed, hf_config=None):
    print(f"{os.path.relpath(path, REPO)}:")
    r = Rand(seed)
    W = init_gpt2(cfg, r) if family == "gpt2" else init_llama(cfg, r)
    ids, targets = make_batch(cfg, r)
    P = NUM_VIRTUAL
    prompt0 = r.normal([P, cfg["dim"]], 1.0)
    prefix0 = r.normal([P, cfg["n_layers"] * 2 * kv_dim(cfg)], 1.0)
    tgt = real_targets(targets, LENGTHS)

    def run(prompt=None, prefix=None, fwd=forward_batched):
        return fwd(W, cfg, family, ids, LENGTHS, prompt=prompt, prefix=prefix)

    # base
    base_logits = run()
    base_loss = loss_of(base_logits, tgt)
    # prompt
    prompt = prompt0.clone().requires_grad_(True)
    prompt_logits = run(prompt=prompt)
    prompt_loss = loss_of(prompt_logits, tgt)
    (prompt_grad,) = torch.autograd.grad(prompt_loss, prompt)
    # prefix
    prefix = prefix0.clone().requires_grad_(True)
    prefix_logits = run(prefix=prefix)
    prefix_loss = loss_of(prefix_logits, tgt)
    (prefix_grad,) = torch.autograd.grad(prefix_loss, prefix)

    if family == "llama":
        check_rope(cfg)
    # (1) batched/masked implementation == literal per-row concatenation
    check_close("base batched vs literal", base_logits, run(fwd=forward_literal))
    check_close("prompt batched vs literal concat", prompt_logits,
                run(prompt=prompt0, fwd=forward_literal))
    check_close("prefix batched vs literal concat", prefix_logits,
                run(prefix=prefix0, fwd=forward_literal))
    # (2) P = 0 reduces to the base model
    check_close("prompt P=0 == base", run(prompt=prompt0[:0]), base_logits, 0.0)
    check_close("prefix P=0 == base", run(prefix=prefix0[:0]), base_logits, 0.0)
    check_close("literal prompt P=0 == base", run(prompt=prompt0[:0], fwd=forward_literal),
                base_logits)
    # sanity: the virtual tokens / prefix really change the result
    assert (prompt_logits - base_logits).abs().max() > 1e-3
    assert (prefix_logits - base_logits).abs().max() > 1e-3
    # (3) gradients: autograd.gradcheck plus a central finite difference on a few elements
    f_prompt = lambda p: loss_of(run(prompt=p), tgt)
    f_prefix = lambda p: loss_of(run(prefix=p), tgt)
    assert torch.autograd.gradcheck(f_prompt, (prompt0.clone().requires_grad_(True),),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(f_prefix, (prefix0.clone().requires_grad_(True),),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)
    print("  check gradcheck(prompt), gradcheck(prefix): passed")
    with torch.no_grad():
        for name, f, x0, g in (("prompt", f_prompt, prompt0, prompt_grad),
                               ("prefix", f_prefix, prefix0, prefix_grad)):
            for idx in ((0, 0), (x0.shape[0] - 1, x0.shape[1] - 1), (1, x0.shape[1] // 2 + 1)):
                h = 1e-5
                xp, xm = x0.clone(), x0.clone()
                xp[idx] += h
                xm[idx] -= h
                fd = (f(xp) - f(xm)).item() / (2 * h)
                err = abs(fd - g[idx].item())
                print(f"  check finite diff d loss/d {name}{list(idx)}: autograd {g[idx].item():+.12f}"
                      f"  fd {fd:+.12f}  |diff| {err:.2e}")
                assert err < 1e-8

    for name, v in (("base", base_loss), ("prompt", prompt_loss), ("prefix", prefix_loss)):
        assert math.isfinite(v.item())
        print(f"  loss {name:6s} = {v.item()!r}")

    doc = {
        "family": family,
        "config": cfg,
        **({"hf_config": hf_config} if hf_config is not None else {}),
        "tensors": {k: T(v) for k, v in W.items()},
        "batch": {
            "batch": BATCH,
            "seq": SEQ,
            "ids": ids.reshape(-1).tolist(),
            "lengths": LENGTHS,
            "targets": targets.reshape(-1).tolist(),
        },
        "cases": {
            "base": {"logits": T(base_logits), "loss": base_loss.item()},
            "prompt": {"num_virtual_tokens": P, "prompt": T(prompt0), "logits": T(prompt_logits),
                       "loss": prompt_loss.item(), "grad": T(prompt_grad)},
            "prefix": {"num_virtual_tokens": P, "prefix": T(prefix0), "logits": T(prefix_logits),
                       "loss": prefix_loss.item(), "grad": T(prefix_grad)},
        },
    }
    text = json.dumps(doc, allow_nan=False)
    # Round-trip check: every double survives the text form exactly.
    back = json.loads(text)
    assert back["cases"]["prompt"]["grad"]["data"] == prompt_grad.reshape(-1).tolist()
    with open(path, "w") as fh:
        fh.write(text)
        fh.write("\n")
    size = os.path.getsize(path)
    print(f"  wrote {size} bytes")
    assert size < 400 * 1024, "golden file too large"


def main():
    torch.manual_seed(0)  # nothing draws from the global RNG, but keep it fixed anyway
    os.makedirs(OUT_DIR, exist_ok=True)
    build(os.path.join(OUT_DIR, "golden_gpt2.json"), "gpt2",
          make_config("gpt2", n_kv_heads=4, hidden_dim=64, tied=True, layout="none"), seed=1)
    build(os.path.join(OUT_DIR, "golden_llama_gqa.json"), "llama",
          make_config("llama", n_kv_heads=2, hidden_dim=24, tied=False, layout="half_split"),
          seed=2)
    build(os.path.join(OUT_DIR, "golden_llama_interleaved.json"), "llama",
          make_config("llama", n_kv_heads=1, hidden_dim=24, tied=True, layout="interleaved"),
          seed=3)
    for name, cfg, seed in newer_families():
        build(os.path.join(OUT_DIR, f"golden_{name}.json"), "llama", cfg, seed, hf_config(name, cfg))
    return 0


def newer_families():
    """(name, config, seed) of the families read from a Hugging Face config.json."""
    llama3 = make_config("llama", n_kv_heads=1, hidden_dim=24, tied=True, layout="half_split")
    llama3["n_heads"] = 2  # head_dim 8: four frequencies, so every llama3 band is hit
    # Frequencies 1, 0.19, 0.038, 0.0073: wavelengths 6, 32 (kept), 167 (blended), 860 (/ factor)
    llama3["rope_theta"] = 500000.0 ** 0.5
    llama3["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    qwen2 = make_config("llama", n_kv_heads=2, hidden_dim=24, tied=True, layout="half_split")
    qwen2["qkv_bias"] = True
    qwen2["rope_theta"] = 1000000.0
    qwen3 = make_config("llama", n_kv_heads=2, hidden_dim=24, tied=False, layout="half_split")
    qwen3["qk_norm"] = True
    qwen3["head_dim"] = 8  # hidden 16 / 4 heads would be 4
    qwen3["rope_theta"] = 1000000.0
    qwen3["norm_eps"] = 1e-6
    mistral = make_config("llama", n_kv_heads=2, hidden_dim=24, tied=False, layout="half_split")
    mistral["sliding_window"] = 16
    return [("llama3", llama3, 4), ("qwen2", qwen2, 5), ("qwen3", qwen3, 6),
            ("mistral", mistral, 7)]


def hf_config(name, cfg):
    """The config.json of `cfg` as transformers writes it for that model class."""
    arch = {"llama3": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}[name]
    j = {
        "architectures": [arch],
        "model_type": "llama" if name == "llama3" else name,
        "hidden_act": "silu",
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv_heads"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": cfg["norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": cfg.get("rope_scaling"),
        "tie_word_embeddings": cfg["tied_head"],
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
    }
    if name == "llama3":
        j.update({"attention_bias": False, "mlp_bias": False, "head_dim": head_dim(cfg),
                  "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1})
    if name in ("qwen2", "qwen3"):
        j.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": 2,
                  "bos_token_id": 1, "eos_token_id": 2})
    if name == "qwen3":
        j.update({"head_dim": cfg["head_dim"], "attention_bias": False})
    if name == "mistral":
        j.update({"sliding_window": cfg["sliding_window"], "head_dim": head_dim(cfg)})
    return j


if __name__ == "__main__":
    sys.exit(main())
