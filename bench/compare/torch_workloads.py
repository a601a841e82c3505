#!/usr/bin/python3
# torch_workloads.py - the PyTorch side of the benchmark comparison: the workloads of
# bench/model_bench.cpp on a GPT-2 written in plain torch (no transformers, no peft), computed the
# way Hugging Face's GPT-2 and PEFT compute them, so the numbers are what a PEFT user gets.
#
# Usage (one workload per process, so the peak resident memory reported is that workload's):
#   /usr/bin/python3 bench/compare/torch_workloads.py --workload train_prompt [--threads 2]
#       [--min-time SECONDS] [--json]
# With --json, prints one object: {"workload", "ms" (median per iteration), "iterations",
# "peak_rss_mb"} and, for the decode workloads, "prefill_ms" (median per request).
#
# Model: GPT-2-small shape in float32 (d 768, 12 layers, 12 heads, hidden 3072, vocab 50257, 1024
# positions), pre-LayerNorm, GELU (tanh form), learned positions, LM head tied to the token
# embedding, no dropout. Random weights U(-0.02, 0.02), LayerNorm gains 1, fixed seed. Every base
# parameter is frozen (requires_grad False), as under PEFT.
#
# Workloads (the names are shared with bench/compare/run.py and bench/model_bench.cpp):
#   train_prompt    one AdamW step of prompt tuning: batch 4 x 128 tokens, 20 virtual tokens first
#   train_prefix    prefix tuning: a 20-token key/value prefix per layer (PEFT's direct embedding)
#   train_ptuning   P-tuning: 20 virtual tokens through PEFT's PromptEncoder MLP
#   train_lora      LoRA r 8, alpha 16 on every layer's fused q/k/v projection
#   prefill128      batch 1, 128 tokens, inference: KV cache plus the last position's logits
#   decode_none     batch 1: prefill 128 tokens, then greedy-decode 128 tokens with the KV cache;
#                   "ms" is per decoded token (the prefill not included), "prefill_ms" per request
#   decode_prompt   the same with the 20 virtual tokens in front of every request's prefill (PEFT)
#   decode_prefix   the same with a 20-token prefix as the initial past keys and values
#   tiny_train_prompt  train_prompt on a tiny model (d 64, 2 layers, batch 4 x 64, 8 virtual tokens)
import argparse
import dataclasses
import json
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class Config:
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    hidden_dim: int = 3072
    vocab_size: int = 50257
    max_positions: int = 1024
    norm_eps: float = 1e-5


GPT2_SMALL = Config()
TINY = Config(dim=64, n_layers=2, n_heads=4, hidden_dim=256, vocab_size=512)


# ------------------------------------------------------------------------------------------------
# The model. Shapes: B batch, T new tokens, P past tokens, H heads, D head dim, C = H * D channels.

class Conv1D(nn.Module):
    """Hugging Face GPT-2's linear layer: weight stored [in, out], y = x W + b."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).uniform_(-0.02, 0.02))
        self.bias = nn.Parameter(torch.empty(n_out).uniform_(-0.02, 0.02))

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return y.view(*x.shape[:-1], -1)


def attention(q, k, v, mask):
    """q [B, H, T, D], k and v [B, H, P+T, D], mask additive [B or 1, 1, T, P+T] -> [B, H, T, D]."""
    if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(v.size(-1))
    return torch.matmul(torch.softmax(w + mask, dim=-1), v)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_heads = c.n_heads
        self.ln_1 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.c_attn = Conv1D(c.dim, 3 * c.dim)
        self.c_proj = Conv1D(c.dim, c.dim)
        self.ln_2 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.c_fc = Conv1D(c.dim, c.hidden_dim)
        self.mlp_proj = Conv1D(c.hidden_dim, c.dim)

    def forward(self, x, mask, past):
        """x [B, T, C]; past (k, v) [B, H, P, D] or None. Returns x and the grown (k, v)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
        if past is not None:  # grown by concatenation, as Hugging Face's legacy cache does
            k = torch.cat((past[0], k), dim=-2)
            v = torch.cat((past[1], v), dim=-2)
        y = attention(q, k, v, mask).permute(0, 2, 1, 3).reshape(B, T, C)
        x = x + self.c_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, (k, v)


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Parameter(torch.empty(c.vocab_size, c.dim).uniform_(-0.02, 0.02))
        self.wpe = nn.Parameter(torch.empty(c.max_positions, c.dim).uniform_(-0.02, 0.02))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.dim, eps=c.norm_eps)
        causal = torch.tril(torch.ones(c.max_positions, c.max_positions, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.requires_grad_(False)

    def embed(self, ids):
        return F.embedding(ids, self.wte)

    def logits(self, hidden):
        return F.linear(hidden, self.wte)  # tied LM head

    def forward(self, embeds, past=None, attention_mask=None):
        """embeds [B, T, C]; past: per layer (k, v) [B, H, P, D] or None; attention_mask [B, P+T]
        of ones and zeros or None. Positions continue after the past (P..P+T-1), as in Hugging
        Face's GPT-2. Returns the final hidden states [B, T, C] and the per-layer (k, v)."""
        B, T, _ = embeds.shape
        P = 0 if past is None else past[0][0].size(-2)
        x = embeds + self.wpe[P:P + T]
        allowed = self.causal[P:P + T, :P + T][None, None]  # [1, 1, T, P+T]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
        mask = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
        presents = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if past is None else past[i])
            presents.append(kv)
        return self.ln_f(x), presents


# ------------------------------------------------------------------------------------------------
# Adapters, PEFT style. Each turns token ids [B, S] into the model's inputs: (embeds, past,
# attention_mask); its trainable parameters are the ones with requires_grad.

class NoAdapter(nn.Module):
    def inputs(self, model, ids):
        return model.embed(ids), None, torch.ones(ids.shape, dtype=torch.long)


class SoftPrompt(nn.Module):
    """Prompt tuning (mlp False) or P-tuning (PEFT's PromptEncoder MLP head): n virtual-token
    embeddings, gathered per row as PEFT does, concatenated in front of each row's embeddings."""

    def __init__(self, c, n, mlp=False):
        super().__init__()
        self.n = n
        self.embedding = nn.Embedding(n, c.dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.encoder = nn.Sequential(nn.Linear(c.dim, c.dim), nn.ReLU(), nn.Linear(c.dim, c.dim),
                                     nn.ReLU(), nn.Linear(c.dim, c.dim)) if mlp else nn.Identity()

    def inputs(self, model, ids):
        B, S = ids.shape
        prompt = self.encoder(self.embedding(torch.arange(self.n).expand(B, self.n)))
        embeds = torch.cat((prompt, model.embed(ids)), dim=1)
        return embeds, None, torch.ones(B, self.n + S, dtype=torch.long)


class Prefix(nn.Module):
    """Prefix tuning, PEFT's direct form: an embedding [n, layers * 2 * C] reshaped into each
    layer's past keys and values [B, H, n, D]; the attention mask gains n ones."""

    def __init__(self, c, n):
        super().__init__()
        self.c, self.n = c, n
        self.embedding = nn.Embedding(n, c.n_layers * 2 * c.dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def inputs(self, model, ids):
        B, S = ids.shape
        c, n = self.c, self.n
        kv = self.embedding(torch.arange(n).expand(B, n))  # [B, n, layers * 2 * C]
        kv = kv.view(B, n, c.n_layers * 2, c.n_heads, c.dim // c.n_heads).permute(2, 0, 3, 1, 4)
        past = [(kv[2 * i], kv[2 * i + 1]) for i in range(c.n_layers)]
        return model.embed(ids), past, torch.ones(B, n + S, dtype=torch.long)


class LoraConv1D(nn.Module):
    """y = x W + b + (alpha / r) (x A^T) B^T, A [r, in] ~ U(+-1/sqrt(in)), B [out, r] zeros."""

    def __init__(self, base, r, alpha):
        super().__init__()
        n_in, n_out = base.weight.shape
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, n_in).uniform_(-n_in ** -0.5, n_in ** -0.5))
        self.lora_B = nn.Parameter(torch.zeros(n_out, r))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


class Lora(NoAdapter):
    """LoRA on every layer's fused q/k/v projection (c_attn), installed into the model."""

    def __init__(self, model, r=8, alpha=16):
        super().__init__()
        self.layers = nn.ModuleList(LoraConv1D(b.c_attn, r, alpha) for b in model.blocks)
        for block, layer in zip(model.blocks, self.layers):
            block.c_attn = layer


def make_adapter(kind, model, n_virtual):
    if kind == "none":
        return NoAdapter()
    if kind == "prompt":
        return SoftPrompt(model.c, n_virtual)
    if kind == "ptuning":
        return SoftPrompt(model.c, n_virtual, mlp=True)
    if kind == "prefix":
        return Prefix(model.c, n_virtual)
    if kind == "lora":
        return Lora(model)
    raise ValueError("unknown adapter " + kind)


def random_ids(c, shape, seed):
    return torch.randint(c.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# Workload families. Each builds its state and returns run(): one iteration, returning the
# timings it measured, in ms ({"ms": ...} plus any extra).

def train(kind, c=GPT2_SMALL, batch=4, seq=128, n_virtual=20):
    """One step: zero_grad, forward, cross-entropy over the labelled tokens, backward, AdamW.
    Targets are the ids shifted left by one over the flattened batch, the very last one -100;
    virtual positions are labelled -100, and the LM head runs over the whole sequence, as in
    Hugging Face."""
    torch.manual_seed(0)
    model = Gpt2(c)
    adapter = make_adapter(kind, model, n_virtual)
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0)
    ids = random_ids(c, (batch, seq), 1)
    targets = torch.cat((ids.flatten()[1:], torch.tensor([-100]))).view(batch, seq)

    def run():
        start = time.perf_counter()
        optimizer.zero_grad()
        embeds, past, attention_mask = adapter.inputs(model, ids)
        hidden, _ = model(embeds, past, attention_mask)
        labels = F.pad(targets, (hidden.size(1) - seq, 0), value=-100)
        logits = model.logits(hidden)
        loss = F.cross_entropy(logits.view(-1, c.vocab_size), labels.view(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        return {"ms": (time.perf_counter() - start) * 1e3}

    return run


def prefill(model, adapter, ids):
    """Runs the prompt; returns the greedy next token [B, 1], the KV cache and the attention mask.
    Only the last position goes through the LM head."""
    embeds, past, attention_mask = adapter.inputs(model, ids)
    hidden, past = model(embeds, past, attention_mask)
    return model.logits(hidden[:, -1]).argmax(-1, keepdim=True), past, attention_mask


def prefill128(c=GPT2_SMALL):
    torch.manual_seed(0)
    model = Gpt2(c)
    adapter = NoAdapter()
    ids = random_ids(c, (1, 128), 1)

    def run():
        start = time.perf_counter()
        with torch.inference_mode():
            prefill(model, adapter, ids)
        return {"ms": (time.perf_counter() - start) * 1e3}

    return run


def decode(kind, c=GPT2_SMALL, prompt_tokens=128, new_tokens=128, n_virtual=20):
    """One request: prefill, then new_tokens greedy steps of one token each (full-vocabulary
    logits, argmax feeds the next step). "ms" is per decoded token, "prefill_ms" per request."""
    torch.manual_seed(0)
    model = Gpt2(c)
    adapter = make_adapter(kind, model, n_virtual)
    ids = random_ids(c, (1, prompt_tokens), 1)

    def run():
        with torch.inference_mode():
            start = time.perf_counter()
            token, past, attention_mask = prefill(model, adapter, ids)
            prefilled = time.perf_counter()
            for _ in range(new_tokens):
                attention_mask = torch.cat((attention_mask, attention_mask.new_ones(1, 1)), dim=1)
                hidden, past = model(model.embed(token), past, attention_mask)
                token = model.logits(hidden[:, -1]).argmax(-1, keepdim=True)
            end = time.perf_counter()
        return {"ms": (end - prefilled) * 1e3 / new_tokens, "prefill_ms": (prefilled - start) * 1e3}

    return run


WORKLOADS = {
    "train_prompt": lambda: train("prompt"),
    "train_prefix": lambda: train("prefix"),
    "train_ptuning": lambda: train("ptuning"),
    "train_lora": lambda: train("lora"),
    "prefill128": lambda: prefill128(),
    "decode_none": lambda: decode("none"),
    "decode_prompt": lambda: decode("prompt"),
    "decode_prefix": lambda: decode("prefix"),
    "tiny_train_prompt": lambda: train("prompt", TINY, seq=64, n_virtual=8),
}


def measure(run, min_time):
    """One warm-up iteration, then iterations until min_time seconds have passed and at least 3
    ran. Returns the median of each timing and the number of timed iterations."""
    run()
    samples = []
    start = time.perf_counter()
    while len(samples) < 3 or time.perf_counter() - start < min_time:
        samples.append(run())
    medians = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    return medians, len(samples)


def main():
    parser = argparse.ArgumentParser(description="PyTorch side of softprompt's benchmarks")
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds of timed iterations (default 5 for training, 3 otherwise)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    training = "train" in args.workload
    min_time = args.min_time if args.min_time is not None else (5.0 if training else 3.0)

    medians, iterations = measure(WORKLOADS[args.workload](), min_time)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"workload": args.workload, "ms": medians["ms"], "iterations": iterations,
              "peak_rss_mb": peak_rss_mb}
    if "prefill_ms" in medians:
        result["prefill_ms"] = medians["prefill_ms"]
    if args.json:
        print(json.dumps(result))
    else:
        unit = "ms per decoded token" if "prefill_ms" in medians else "ms per iteration"
        extra = ", prefill %.1f ms" % medians["prefill_ms"] if "prefill_ms" in medians else ""
        print("%s: %.1f %s (median of %d)%s, peak RSS %.0f MB, torch %s, %d threads"
              % (args.workload, medians["ms"], unit, iterations, extra, peak_rss_mb,
                 torch.__version__, args.threads))


if __name__ == "__main__":
    main()
