"""Machine description printed with every benchmark number: CPU model, SIMD flags, threads, versions."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

import torch

from sbts.tasks.runs import git_commit

SIMD_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "neon", "asimd")


def machine_info() -> dict[str, object]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in (platform.processor(), platform.machine()):
                model = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {"cpu": model, "cores": os.cpu_count(), "simd": [f for f in SIMD_FLAGS if f in flags],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "commit": git_commit()}


def machine_line(info: dict[str, object] | None = None) -> str:
    info = info or machine_info()
    return (f"{info['cpu']}, {info['cores']} cores, SIMD {' '.join(info['simd']) or 'unknown'}, "
            f"torch {info['torch']}, Python {info['python']}"
            + (f", sbts commit {info['commit']}" if info.get("commit") else ""))


def mean_std(values: list[float], fmt: str = ".3f") -> str:
    """``mean ± sample std`` formatted with ``fmt`` (default three decimals; "–" for no values); NaN values are
    left out."""
    values = [v for v in values if v == v]
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {std:{fmt}}"


def replace_section(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (append if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def run_in_processes(function, jobs: list[dict], workers: int) -> list[dict]:
    """``function(job)`` for every job in ``workers`` processes, in order; each result is printed as it comes."""
    from concurrent.futures import ProcessPoolExecutor

    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(function, jobs):
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


def save_results(markdown: Path, section: str, text: str, info: dict, args, results: list[dict],
                 **extra: object) -> None:
    """The report into its section of ``markdown`` and the raw results into ``benchmarks-<section>.json`` beside it."""
    print(text)
    replace_section(markdown, section, text)
    arguments = {key: value for key, value in vars(args).items() if key != "from_json"} | {"output": str(markdown)}
    (markdown.parent / f"benchmarks-{section}.json").write_text(
        json.dumps({"machine": info, "args": arguments, **extra, "results": results}, indent=1))
