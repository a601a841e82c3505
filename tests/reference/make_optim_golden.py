#!/usr/bin/python3
# make_optim_golden.py - float64 PyTorch reference for softprompt's optimizers, schedules and
# gradient clipping (tests/optim_test.cpp).
#
# Runs torch.optim.SGD (plain, momentum, dampening, Nesterov, weight decay), torch.optim.Adam
# (with and without L2 weight decay, amsgrad), torch.optim.AdamW (also driven by a warm-up + cosine
# schedule through LambdaLR), and a Python port of Hugging Face's transformers.optimization.Adafactor
# (torch 1.13 has none; `HfAdafactor` below follows HF's algorithm operation by operation:
# relative_step with and without warmup_init, a fixed lr with relative_step=False, beta1,
# weight decay, update clipping) for STEPS steps each, from the same initial parameters:
#   W [3, 5]  a matrix (Adafactor: factored second moment)
#   b [5]     a 1-D vector (Adafactor: full second moment; softprompt holds it as [1, 5])
# The gradients come from a loss whose gradient depends on the parameters,
#   L(p) = sum(A*p^2/2 + C*p^3/3 + B*p)   =>   dL/dp = A*p + C*p*p + B   (elementwise),
# evaluated at the current parameters before every step (the script checks the closed form
# against torch.autograd). It also records the HF learning-rate schedules (through torch's
# LambdaLR) and torch.nn.utils.clip_grad_norm_.
#
# Output (overwritten): tests/data/optim_golden.json
# Regenerate, from the repository root, with Debian's PyTorch (python3-torch 1.13):
#   /usr/bin/python3 tests/reference/make_optim_golden.py
#
# JSON schema (T = {"shape": [...], "data": [row-major flat list]}; floats are Python's repr):
#   format "softprompt-optim-golden", version 1, torch (version string), steps
#   params   {"W": T, "b": T}          initial values
#   loss     {"A": {"W": T, "b": T}, "B": {...}, "C": {...}}
#   cases    [{name, optimizer ("sgd"|"adam"|"adamw"|"adafactor"), options {...},
#              schedule (optional, as in schedules below, drives lr before each step),
#              lrs [lr used at each step] (scheduled cases), trajectory [{"W": T, "b": T} after
#              each step]}]
#            Adafactor options use HF names (lr may be null, eps = [eps1, eps2], beta1 may be null).
#   schedules [{kind ("constant"|"warmup_constant"|"warmup_linear"|"warmup_cosine"), lr, warmup,
#              total, num_cycles, lrs [LambdaLR's lr for steps 0..len-1]}]
#   clip     [{max_norm, grads {"W": T, "b": T} (before), norm, clipped {"W": T, "b": T}}]

import json
import math
import os

import torch

torch.set_default_dtype(torch.float64)
STEPS = 10


def tensor_json(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": [float(x) for x in t.reshape(-1).tolist()]}


# ------------------------------------------------------------------------------------------------
# Hugging Face Adafactor, ported from the algorithm in transformers.optimization.Adafactor.

class HfAdafactor(torch.optim.Optimizer):
    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8,
                 beta1=None, weight_decay=0.0, scale_parameter=True, relative_step=True,
                 warmup_init=False):
        if lr is not None and relative_step:
            raise ValueError("lr and relative_step=True cannot be combined")
        if warmup_init and not relative_step:
            raise ValueError("warmup_init=True needs relative_step=True")
        super().__init__(params, dict(lr=lr, eps=eps, clip_threshold=clip_threshold,
                                      decay_rate=decay_rate, beta1=beta1,
                                      weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init))

    @staticmethod
    def rms(x):
        return x.norm(2) / (x.numel() ** 0.5)

    @staticmethod
    def step_size(group, step, param_rms):
        rho = group["lr"]
        if group["relative_step"]:
            floor = 1e-6 * step if group["warmup_init"] else 1e-2
            rho = min(floor, 1.0 / math.sqrt(step))
        scale = 1.0
        if group["scale_parameter"]:
            scale = max(group["eps"][1], param_rms)
        return scale * rho

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                factored = grad.dim() >= 2
                first_moment = group["beta1"] is not None
                if len(state) == 0:
                    state["step"] = 0
                    if first_moment:
                        state["exp_avg"] = torch.zeros_like(grad)
                    if factored:
                        state["exp_avg_sq_row"] = torch.zeros(grad.shape[:-1])
                        state["exp_avg_sq_col"] = torch.zeros(grad.shape[:-2] + grad.shape[-1:])
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                state["step"] += 1
                t = state["step"]
                lr = self.step_size(group, t, self.rms(p).item())
                beta2t = 1.0 - math.pow(t, group["decay_rate"])
                sq = grad ** 2 + group["eps"][0]
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(sq.mean(dim=-1), alpha=1.0 - beta2t)
                    col.mul_(beta2t).add_(sq.mean(dim=-2), alpha=1.0 - beta2t)
                    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                    c_factor = col.unsqueeze(-2).rsqrt()
                    update = torch.mul(r_factor, c_factor).mul_(grad)
                else:
                    v = state["exp_avg_sq"]
                    v.mul_(beta2t).add_(sq, alpha=1.0 - beta2t)
                    update = v.rsqrt().mul_(grad)
                update.div_((self.rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                if first_moment:
                    m = state["exp_avg"]
                    m.mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
                    update = m
                if group["weight_decay"] != 0:
                    p.add_(p, alpha=-group["weight_decay"] * lr)
                p.add_(-update)


# ------------------------------------------------------------------------------------------------
# HF schedule lambdas (transformers.optimization), applied through torch's LambdaLR.

def schedule_lambda(kind, warmup=0, total=0, num_cycles=0.5):
    def warm(s):
        return float(s) / float(max(1, warmup))

    if kind == "constant":
        return lambda s: 1.0
    if kind == "warmup_constant":
        return lambda s: warm(s) if s < warmup else 1.0
    if kind == "warmup_linear":
        return lambda s: warm(s) if s < warmup else max(
            0.0, float(total - s) / float(max(1, total - warmup)))
    if kind == "warmup_cosine":
        def f(s):
            if s < warmup:
                return warm(s)
            progress = float(s - warmup) / float(max(1, total - warmup))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
        return f
    raise ValueError(kind)


def schedule_lrs(spec, n):
    dummy = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([dummy], lr=spec["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, schedule_lambda(spec["kind"], spec["warmup"], spec["total"], spec["num_cycles"]))
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# ------------------------------------------------------------------------------------------------
# The problem: fixed initial parameters and loss coefficients.

gen = torch.Generator().manual_seed(20240611)


def uniform(shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


INIT = {"W": uniform((3, 5), -1.0, 1.0), "b": uniform((5,), -1.0, 1.0)}
COEF = {
    "A": {k: uniform(v.shape, 0.5, 1.5) for k, v in INIT.items()},
    "B": {k: uniform(v.shape, -1.0, 1.0) for k, v in INIT.items()},
    "C": {k: uniform(v.shape, -0.3, 0.3) for k, v in INIT.items()},
}


def loss_of(name, p):
    a, b, c = COEF["A"][name], COEF["B"][name], COEF["C"][name]
    return (a * p ** 2 / 2 + c * p ** 3 / 3 + b * p).sum()


def grad_of(name, p):
    a, b, c = COEF["A"][name], COEF["B"][name], COEF["C"][name]
    return a * p + c * p * p + b


def set_grads(params):
    for name, p in params.items():
        # The closed form is what the C++ test evaluates; check it is the loss's gradient.
        q = p.detach().clone().requires_grad_(True)
        loss_of(name, q).backward()
        g = grad_of(name, p.detach())
        assert torch.allclose(q.grad, g, rtol=1e-14, atol=1e-14), name
        p.grad = g.clone()


def make_optimizer(kind, options, params):
    plist = [params["W"], params["b"]]
    o = dict(options)
    if kind == "sgd":
        return torch.optim.SGD(plist, **o)
    if kind in ("adam", "adamw"):
        betas = (o.pop("beta1"), o.pop("beta2"))
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(plist, betas=betas, **o)
    if kind == "adafactor":
        o["eps"] = tuple(o["eps"])
        return HfAdafactor(plist, **o)
    raise ValueError(kind)


def run_case(name, kind, options, schedule=None):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in INIT.items()}
    opt = make_optimizer(kind, options, params)
    sched = None
    if schedule is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, schedule_lambda(schedule["kind"], schedule["warmup"], schedule["total"],
                                 schedule["num_cycles"]))
    trajectory, lrs = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        set_grads(params)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
        trajectory.append({k: tensor_json(v) for k, v in params.items()})
        for k, v in params.items():
            assert torch.isfinite(v).all(), (name, k)
    case = {"name": name, "optimizer": kind, "options": options, "trajectory": trajectory}
    if schedule is not None:
        case["schedule"] = schedule
        case["lrs"] = lrs
    return case


def adam_options(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False):
    return dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                amsgrad=amsgrad)


def adafactor_options(lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                      weight_decay=0.0, scale_parameter=True, relative_step=True,
                      warmup_init=False):
    return dict(lr=lr, eps=list(eps), clip_threshold=clip_threshold, decay_rate=decay_rate,
                beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
                relative_step=relative_step, warmup_init=warmup_init)


def sgd_options(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    return dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov)


def main():
    cosine = dict(kind="warmup_cosine", lr=0.1, warmup=3, total=STEPS, num_cycles=0.5)
    cases = [
        run_case("sgd_plain", "sgd", sgd_options(0.1)),
        run_case("sgd_momentum", "sgd", sgd_options(0.05, momentum=0.9)),
        run_case("sgd_dampening", "sgd", sgd_options(0.05, momentum=0.9, dampening=0.3)),
        run_case("sgd_nesterov", "sgd", sgd_options(0.05, momentum=0.9, nesterov=True)),
        run_case("sgd_weight_decay", "sgd", sgd_options(0.1, momentum=0.5, weight_decay=0.1)),
        run_case("adam", "adam", adam_options(0.05)),
        run_case("adam_weight_decay", "adam",
                 adam_options(0.05, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)),
        run_case("adam_amsgrad", "adam", adam_options(0.05, beta2=0.6, amsgrad=True)),
        run_case("adam_no_amsgrad", "adam", adam_options(0.05, beta2=0.6)),
        run_case("adamw", "adamw", adam_options(0.05, weight_decay=0.1)),
        run_case("adamw_cosine_schedule", "adamw", adam_options(0.1, weight_decay=0.01),
                 schedule=cosine),
        run_case("adafactor_relative_step", "adafactor", adafactor_options()),
        run_case("adafactor_warmup_init", "adafactor", adafactor_options(warmup_init=True)),
        # The prompt-tuning paper's setting: lr 0.3, no parameter scaling, weight decay 1e-5.
        run_case("adafactor_fixed_lr", "adafactor",
                 adafactor_options(lr=0.3, relative_step=False, scale_parameter=False,
                                   weight_decay=1e-5)),
        run_case("adafactor_beta1_clip", "adafactor",
                 adafactor_options(lr=0.05, relative_step=False, scale_parameter=True, beta1=0.9,
                                   weight_decay=0.1, clip_threshold=0.5, decay_rate=-0.5)),
    ]

    schedules = []
    for spec in [
        dict(kind="constant", lr=0.3, warmup=0, total=0, num_cycles=0.0),
        dict(kind="warmup_constant", lr=0.3, warmup=4, total=0, num_cycles=0.0),
        dict(kind="warmup_linear", lr=0.3, warmup=3, total=10, num_cycles=0.0),
        dict(kind="warmup_linear", lr=2e-5, warmup=0, total=7, num_cycles=0.0),
        dict(kind="warmup_cosine", lr=0.3, warmup=3, total=10, num_cycles=0.5),
        dict(kind="warmup_cosine", lr=1e-3, warmup=0, total=9, num_cycles=1.0),
    ]:
        n = 13
        s = dict(spec)
        s["lrs"] = schedule_lrs(spec, n)
        schedules.append(s)

    clips = []
    for max_norm in (1.0, 100.0):
        params = {k: torch.nn.Parameter(v.clone()) for k, v in INIT.items()}
        set_grads(params)
        before = {k: tensor_json(v.grad) for k, v in params.items()}
        norm = torch.nn.utils.clip_grad_norm_([params["W"], params["b"]], max_norm)
        clips.append({"max_norm": max_norm, "grads": before, "norm": float(norm),
                      "clipped": {k: tensor_json(v.grad) for k, v in params.items()}})

    out = {
        "format": "softprompt-optim-golden",
        "version": 1,
        "torch": torch.__version__,
        "steps": STEPS,
        "params": {k: tensor_json(v) for k, v in INIT.items()},
        "loss": {c: {k: tensor_json(v) for k, v in d.items()} for c, d in COEF.items()},
        "cases": cases,
        "schedules": schedules,
        "clip": clips,
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "tests", "data", "optim_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} optimizer cases)")


if __name__ == "__main__":
    main()
