"""Run every benchmark and write the results page, ``benchmarks/RESULTS.md``.

Run: ``python benchmarks/run_all.py`` (about 5 minutes on 2 idle cores) or
``python benchmarks/run_all.py --quick`` (about a minute; writes ``RESULTS-quick.md``
instead, so a smoke run never overwrites the real results).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from pathlib import Path

import kv_cache
import shakespeare_char
import train_throughput
from _common import BENCH_DIR, machine_info, setup, table

BENCHMARKS = [
    ("Training throughput: fused vs explicit attention", train_throughput),
    ("Tiny Shakespeare (characters): nanoGPT's CPU recipe vs ours", shakespeare_char),
    ("Generation with and without the KV cache", kv_cache),
]

NOISE_NOTE = (
    "These numbers come from one run on a shared machine where other jobs (tests, notebook "
    "builds) may use the same cores at the same time, so absolute speeds move by tens of "
    "percent from run to run. That is why every result is a ratio or a comparison between "
    "variants measured in the same run, interleaved where possible, and why no test in "
    "`tests/` depends on a timing."
)


def run(quick: bool = False, output: Path | None = None) -> dict:
    threads = setup(0)
    started = datetime.datetime.now().astimezone()
    results: dict[str, dict] = {}
    sections: list[str] = []
    for title, module in BENCHMARKS:
        print(f"\n=== {title} ===", flush=True)
        began = time.perf_counter()
        try:
            res = module.run(quick=quick)
            body = module.report(res)
        except Exception as err:
            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
            body = f"**FAILED**: `{res['error']}`"
        res["seconds"] = time.perf_counter() - began
        results[module.__name__] = res
        sections.append(f"## {title}\n\n`benchmarks/{module.__name__}.py`, "
                        f"{res['seconds']:.0f} s\n\n{body}\n")

    info = machine_info()
    info["torch_threads"] = threads
    summary = summary_rows(results)
    page = "\n".join([
        "# Benchmark results" + (" (--quick smoke run: not meaningful)" if quick else ""),
        "",
        (f"Run on {started:%Y-%m-%d %H:%M %Z} with `python benchmarks/run_all.py"
        f"{' --quick' if quick else ''}`."),
        "",
        table(["machine", ""], [
            ["CPU", info["cpu"]], ["cores", info["cores"]],
            ["torch threads", info["torch_threads"]], ["torch", info["torch"]],
            ["Python", info["python"]], ["platform", info["platform"]],
        ]),
        "",
        f"> {NOISE_NOTE}",
        "",
        "## Summary",
        "",
        table(["benchmark", "result", "target", "met"], summary),
        "",
        *sections,
    ])
    output = output or BENCH_DIR / ("RESULTS-quick.md" if quick else "RESULTS.md")
    output.write_text(page)
    print(f"\n{table(['benchmark', 'result', 'target', 'met'], summary)}\n\nwrote {output}")
    return {"machine": info, "results": results, "output": str(output)}


def summary_rows(results: dict[str, dict]) -> list[list[str]]:
    rows = []
    tp = results.get("train_throughput", {})
    if "error" in tp:
        rows.append(["training throughput", tp["error"], "-", "NO"])
    else:
        for s in tp["shapes"]:
            rows.append([f"training throughput, {s['shape']['name']}",
                         f"sdpa / explicit = {s['ratio']:.2f}x", "none (measurement)", "-"])
    sc = results.get("shakespeare_char", {})
    if "error" in sc:
        rows.append(["Tiny Shakespeare", sc["error"], "-", "NO"])
    else:
        base, ours = (sc["recipes"][n] for n in sc["recipes"])
        rows.append([
            "Tiny Shakespeare, our recipe vs nanoGPT's",
            (f"val {ours['val_loss']:.3f} in {ours['train_seconds']:.0f} s vs "
            f"val {base['val_loss']:.3f} in {base['train_seconds']:.0f} s"),
            f"val <= {sc['target_val_loss']:.2f} in <= nanoGPT's time",
            "yes" if sc["target_met"] else "NO",
        ])
    kv = results.get("kv_cache", {})
    if "error" in kv:
        rows.append(["KV cache", kv["error"], "-", "NO"])
    else:
        rows.append([
            "KV cache, gpt2 shape",
            f"{kv['speedup']:.1f}x, identical tokens: {'yes' if kv['identical_tokens'] else 'NO'}",
            f">= {kv['target_speedup']:.0f}x, identical", "yes" if kv["target_met"] else "NO",
        ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    parser.add_argument("--output", type=Path, default=None, help="where to write the page")
    args = parser.parse_args()
    out = run(quick=args.quick, output=args.output)
    failed = [name for name, r in out["results"].items() if "error" in r]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
