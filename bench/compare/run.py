#!/usr/bin/python3
# run.py - softprompt's model benchmarks against the same workloads in PyTorch, in one table.
#
# Usage, from anywhere (standard library only; --python must have torch: Debian's python3-torch):
#   /usr/bin/python3 bench/compare/run.py [--bench PATH] [--rounds 3] [--threads 2]
#       [--workloads train_prompt,decode_none,...] [--markdown FILE] [--python /usr/bin/python3]
#
# Each round runs every workload on both sides, one process per measurement so that peak RSS is
# that workload's: softprompt's Google Benchmark binary filtered to one benchmark, and
# torch_workloads.py --workload NAME. The two sides are interleaved (softprompt then PyTorch, and
# the other way round in the next round) so that a slow stretch of a noisy host hits both; the
# table shows medians over rounds. Progress goes to stderr, the table to stdout.
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# workload -> softprompt benchmark name (without Google Benchmark's "/min_time:..." suffixes)
OURS = {
    "train_prompt": "BM_TrainStep/prompt_tuning",
    "train_prefix": "BM_TrainStep/prefix_tuning",
    "train_ptuning": "BM_TrainStep/p_tuning",
    "train_lora": "BM_TrainStep/lora",
    "prefill128": "BM_Prefill128/none",
    "decode_none": "BM_Decode/none",
    "decode_prompt": "BM_Decode/cached_prompt",
    "decode_prefix": "BM_Decode/prefix",
    "tiny_train_prompt": "BM_TinyTrainStep/prompt_tuning",
}
DEFAULT_WORKLOADS = ["train_prompt", "train_prefix", "train_ptuning", "train_lora",
                     "tiny_train_prompt", "prefill128", "decode_none", "decode_prompt",
                     "decode_prefix"]
# workload -> (minimum speed-up PyTorch/ours, maximum memory ours/PyTorch or None)
TARGETS = {
    "train_prompt": (1.5, 0.5),
    "train_prefix": (1.5, 0.5),
    "prefill128": (1.5, None),
    "decode_none": (1.5, None),
}
PROMPT_OVERHEAD = 1.03  # decode_prompt: ours at most 3% slower per token than our decode_none
# Our paired measurement of that ratio: both requests decode in one process, token by token, A B A B
PAIRED_PROMPT = "BM_DecodePairedPromptOverhead"
TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
# Google Benchmark appends these to a benchmark's name (e.g. "BM_Prefill128/min_time:3.000")
RUN_SUFFIXES = re.compile(r"(/(min_time|min_warmup_time|iterations|repeats|threads):[^/]*"
                          r"|/(real_time|manual_time|process_time))+$")


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(cmd, env):
    """Runs cmd; returns its stdout, or None (and logs stderr's tail) when it fails."""
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        log("  cannot run %s: %s" % (cmd[0], e))
        return None
    if p.returncode != 0:
        log("  %s exited with %d:\n    %s" % (" ".join(cmd), p.returncode,
                                              "\n    ".join(p.stderr.strip().splitlines()[-5:])))
        return None
    return p.stdout


def list_ours(bench, env):
    """Our benchmarks: base name -> full name as Google Benchmark knows it."""
    out = run([str(bench), "--benchmark_list_tests=true"], env)
    if out is None:
        log("softprompt benchmarks unavailable; build them with: cmake --preset release && "
            "cmake --build --preset release --target model_bench")
        return {}
    return {RUN_SUFFIXES.sub("", name): name for name in out.split()}


def regex_escape(name):
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)


def run_ours(bench, full_name, env):
    """Returns {"ms": real time per iteration, "peak_mb": counter peak_rss_MB or None}, or None."""
    out = run([str(bench), "--benchmark_filter=^%s$" % regex_escape(full_name),
               "--benchmark_format=json"], env)
    if out is None:
        return None
    try:
        entries = json.loads(out[out.index("{"):])["benchmarks"]
    except (ValueError, KeyError) as e:
        log("  unreadable output of %s: %s" % (bench, e))
        return None
    for entry in entries:
        if entry.get("run_type", "iteration") == "iteration" and entry["name"] == full_name:
            if entry.get("error_occurred"):
                log("  %s: %s" % (full_name, entry.get("error_message", "error")))
                return None
            return {"ms": entry["real_time"] * TO_MS[entry.get("time_unit", "ns")],
                    "peak_mb": entry.get("peak_rss_MB"), "ratio": entry.get("ratio")}
    log("  %s: not in the output" % full_name)
    return None


def run_torch(python, workload, threads, env):
    """Returns {"ms", "peak_mb"} plus "prefill_ms" for the decode workloads, or None."""
    out = run([python, str(HERE / "torch_workloads.py"), "--workload", workload,
               "--threads", str(threads), "--json"], env)
    if out is None:
        return None
    try:
        result = json.loads(out.strip().splitlines()[-1])
        result["peak_mb"] = result.pop("peak_rss_mb")
    except (ValueError, IndexError, KeyError) as e:
        log("  unreadable output of torch_workloads.py: %s" % e)
        return None
    return result


def median(results, key):
    values = [r[key] for r in results if r is not None and r.get(key) is not None]
    return statistics.median(values) if values else None


def cell(value, fmt="%.1f"):
    return "—" if value is None else fmt % value


def machine_line(python, threads, rounds):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = run([python, "-c", "import torch; print(torch.__version__)"], os.environ.copy())
    torch_version = out.strip() if out else "not found"
    return ("Machine: %d CPUs (nproc), %s; PyTorch %s; %s. %d threads each side; medians over "
            "rounds (%d)." % (len(os.sched_getaffinity(0)), cpu, torch_version,
                              datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), threads, rounds))


def table(workloads, ours_names, results, paired=()):
    """The markdown table and the lines below it."""
    paired_values = [p for p in paired if p is not None]
    paired_ratio = statistics.median(paired_values) if paired_values else None
    rows = ["| workload | softprompt ms | PyTorch ms | speed-up (PyTorch/ours) "
            "| softprompt peak MB | PyTorch peak MB | memory (ours/PyTorch) | target | met |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    summary = {}
    for w in workloads:
        ours, torch = results[w]["ours"], results[w]["torch"]
        s = {"ours_ms": median(ours, "ms"), "ours_mb": median(ours, "peak_mb"),
             "torch_ms": median(torch, "ms"), "torch_mb": median(torch, "peak_mb"),
             "torch_prefill_ms": median(torch, "prefill_ms")}
        s["speedup"] = s["torch_ms"] / s["ours_ms"] if s["ours_ms"] and s["torch_ms"] else None
        s["memory"] = s["ours_mb"] / s["torch_mb"] if s["ours_mb"] and s["torch_mb"] else None
        summary[w] = s
    for w in workloads:
        s = summary[w]
        ours_ms = "missing" if w not in ours_names else cell(s["ours_ms"]).replace("—", "failed")
        torch_ms = cell(s["torch_ms"]).replace("—", "failed")
        target, met = "—", "—"
        if w in TARGETS:
            min_speedup, max_memory = TARGETS[w]
            target = "speed-up ≥ %g" % min_speedup
            checks = [None if s["speedup"] is None else s["speedup"] >= min_speedup]
            if max_memory is not None:
                target += ", memory ≤ %g" % max_memory
                checks.append(None if s["memory"] is None else s["memory"] <= max_memory)
            met = "?" if None in checks else "yes" if all(checks) else "no"
        elif w == "decode_prompt":
            target = "≤ %g × our decode_none" % PROMPT_OVERHEAD
            ratio = paired_ratio if paired_ratio is not None else prompt_ratio(summary, "ours_ms")
            met = "?" if ratio is None else "yes" if ratio <= PROMPT_OVERHEAD else "no"
        rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            w, ours_ms, torch_ms, cell(s["speedup"], "%.2f×"), cell(s["ours_mb"], "%.0f"),
            cell(s["torch_mb"], "%.0f"), cell(s["memory"], "%.2f"), target, met))
    notes = []
    if "decode_prompt" in summary:
        ours, torch = prompt_ratio(summary, "ours_ms"), prompt_ratio(summary, "torch_ms")
        notes.append("Per decoded token, decode_prompt / decode_none: softprompt %s (target ≤ %g), "
                     "PyTorch %s (from the table's medians)." % (
                         cell(ours, "%.3f"), PROMPT_OVERHEAD, cell(torch, "%.3f")))
        if paired_ratio is not None:
            notes.append("softprompt, paired in one process (the two requests decode token by "
                         "token, A B A B): decode_prompt / decode_none %.3f (median of rounds: %s); "
                         "the met column uses this." % (
                             paired_ratio, ", ".join(cell(p, "%.3f") for p in paired)))
        with_prompt = summary["decode_prompt"]["torch_prefill_ms"]
        without = summary.get("decode_none", {}).get("torch_prefill_ms")
        notes.append("PyTorch prefill per request (128 tokens): %s ms with the 20-token prompt, "
                     "%s ms without." % (cell(with_prompt), cell(without)))
    notes.append("ms: per training step (train_*), per 128-token prefill (prefill128), per decoded "
                 "token (decode_*). Peak MB: the process's peak resident memory.")
    return rows, notes


def prompt_ratio(summary, key):
    if "decode_none" not in summary:
        return None
    prompt, none = summary["decode_prompt"][key], summary["decode_none"][key]
    return prompt / none if prompt and none else None


def main():
    parser = argparse.ArgumentParser(
        description="softprompt's model benchmarks against the same workloads in PyTorch")
    parser.add_argument("--bench", type=Path, default=REPO / "build/release/bench/model_bench",
                        help="softprompt's benchmark binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help="comma-separated, from: " + ", ".join(OURS))
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="Python with torch for the PyTorch side")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in OURS]
    if unknown:
        parser.error("unknown workloads: %s (known: %s)" % (", ".join(unknown), ", ".join(OURS)))

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE",
               MKL_NUM_THREADS=str(args.threads))
    available = list_ours(args.bench, env)
    ours_names = {w: available[OURS[w]] for w in workloads if OURS[w] in available}
    for w in workloads:
        if w not in ours_names:
            log("%s: %s is not in %s; reported as missing" % (w, OURS[w], args.bench))

    results = {w: {"ours": [], "torch": []} for w in workloads}
    paired = []  # our paired decode_prompt / decode_none ratio, one per round
    for r in range(args.rounds):
        for w in workloads:
            sides = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
            for side in sides:
                if side == "ours":
                    if w not in ours_names:
                        continue
                    result = run_ours(args.bench, ours_names[w], env)
                else:
                    result = run_torch(args.python, w, args.threads, env)
                results[w][side].append(result)
                log("[round %d/%d] %-17s %-10s %s" % (
                    r + 1, args.rounds, w, "softprompt" if side == "ours" else "PyTorch",
                    "failed" if result is None else "%.1f ms, peak %s MB%s" % (
                        result["ms"], cell(result.get("peak_mb"), "%.0f"),
                        ", prefill %.1f ms" % result["prefill_ms"] if "prefill_ms" in result
                        else "")))

        if "decode_prompt" in workloads and PAIRED_PROMPT in available:
            result = run_ours(args.bench, available[PAIRED_PROMPT], env)
            paired.append(None if result is None else result.get("ratio"))
            log("[round %d/%d] softprompt paired decode_prompt / decode_none: %s" % (
                r + 1, args.rounds, cell(paired[-1], "%.3f")))

    rows, notes = table(workloads, ours_names, results, paired)
    text = "\n".join([machine_line(args.python, args.threads, args.rounds), ""] + rows + [""] +
                     notes) + "\n"
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
