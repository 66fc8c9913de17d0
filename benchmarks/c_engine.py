"""The C export on this machine: footprint (flash, RAM) and speed against eager PyTorch, numpy and ONNX Runtime.

    python benchmarks/c_engine.py                # footprint and speed, printed
    python benchmarks/c_engine.py --write        # ... and written to docs/benchmarks.md (sections c-footprint,
                                                 # c-speed)
    python benchmarks/c_engine.py --quick        # fewer rounds, no callgrind (a smoke run)

Models are the paper configurations (JapaneseVowels classification, SMD anomaly detection, ETTm1 forecasting)
with random scores: neither size nor speed depends on training. Footprint: the generated sbts.c compiled to an
object with ``-Os`` and read by ``size``, for x86-64 (host gcc, ``-fno-pic``) and, when Debian's
gcc-arm-none-eabi is installed, for a Cortex-M4 (``-mcpu=cortex-m4 -mthumb -mfloat-abi=hard``), also linked
into a whole image with newlib's libm (``--specs=nosys.specs``, unused sections dropped). Speed: batch 1, one
thread everywhere, the median of 7 rounds after warm-up; the C engine is called through ctypes from a shared
library of the same source, compiled with -O2 (and -O3 -march=native, labelled). Instruction counts come from
``valgrind --tool=callgrind`` on a harness that runs the same forward pass (the count of 11 calls minus that
of 1, over 10), which machine noise does not change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference import median_ms  # noqa: E402
from machine import machine_info, machine_line, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = [("classification", "JapaneseVowels"), ("anomaly", "SMD"), ("forecasting", "ETTm1")]
DENSITIES = (0.5, 0.25, 0.1)
NATIVE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
STREAMABLE = {"pos_encoding": "rope"}  # the paper's SMD SBT (Step-T, no norms) with relative positions
MACS_PER_CYCLE = {"avx512f": 32, "fma": 16}  # single-precision FMAs per cycle and core: 2 units x vector width
CALLGRIND_CALLS = (1, 11)
HARNESS = r"""
#include <stdlib.h>
#include "sbts.h"
static float x[SBTS_MAX_LEN * SBTS_IN_CHANNELS], out[SBTS_OUT_DIM];
int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 1, i, n = SBTS_MAX_LEN;
    for (i = 0; i < n * SBTS_IN_CHANNELS; ++i) x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    sbts_init();
    for (i = 0; i < calls; ++i) if (sbts_forward(x, n, out)) return 1;
    return 0;
}
"""
IMAGE_MAIN = r"""
#include "sbts.h"
static float x[SBTS_MAX_LEN * SBTS_IN_CHANNELS], out[SBTS_OUT_DIM];
int main(void) { return sbts_forward(x, SBTS_MAX_LEN, out); }
"""


def task_state(task: str, out_dim: int) -> dict:
    return {"classification": {"classes": [str(i) for i in range(out_dim)]}, "anomaly": {},
            "forecasting": {"formulation": {"target": "value", "input_norm": "none"},
                            "columns": [f"v{i}" for i in range(out_dim)]}}[task]  # one step ahead: a column per output


def models(task: str, dataset: str, density: float | None = None, **overrides):
    """The paper's SBT (random scores) and its dense counterpart, as config_pair builds them."""
    import torch

    from sbts.compression import config_pair
    from sbts.models import create_model

    torch.manual_seed(0)
    sbt_side, dense_side, _ = config_pair(ROOT / "sbts" / "configs" / "paper" / f"{task}_{dataset}_sbt.yaml",
                                          density=density)
    sbt = create_model(dataclasses.replace(sbt_side.model.config, **overrides)) if overrides else sbt_side.model
    for model in (sbt, dense_side.model):
        for name, parameter in model.named_parameters():
            if name.endswith("scores"):
                torch.nn.init.normal_(parameter.data)
        model.eval()
    return sbt, dense_side.model


def artifact_of(model, task: str):
    from sbts.export.artifact import build_artifact
    from sbts.runtime.artifact import artifact_bytes, load_artifact_bytes

    data = artifact_bytes(*build_artifact(model, task=task, inference_state=task_state(task, model.config.out_dim)))
    return load_artifact_bytes(data, "benchmark"), len(data)


def size_of(path: Path, tool: str) -> dict[str, int]:
    text, data, bss = (int(v) for v in subprocess.run([tool, str(path)], capture_output=True, text=True,
                                                      check=True).stdout.splitlines()[1].split()[:3])
    return {"flash": text + data, "ram": data + bss}


def cortex_m4_image(folder: Path) -> dict[str, int] | None:
    from sbts.export.c_build import CORTEX_M4, STRICT_FLAGS

    compiler, size_tool, flags = CORTEX_M4
    if shutil.which(compiler) is None:
        return None
    (folder / "main.c").write_text(IMAGE_MAIN)
    image = folder / "image.elf"
    subprocess.run([compiler, *STRICT_FLAGS, "-Os", *flags, "-ffunction-sections", "-fdata-sections",
                    "--specs=nosys.specs", "-Wl,--gc-sections", "-o", str(image), str(folder / "sbts.c"),
                    str(folder / "main.c"), "-lm"], check=True, capture_output=True)
    return size_of(image, size_tool)


def footprint_rows() -> list[dict]:
    from sbts.compression import summarize_config
    from sbts.export.c_build import CORTEX_M4, find_compiler, measure_footprint
    from sbts.export.c_source import WEIGHT_FORMS, c_sources

    compiler = find_compiler()
    rows = []
    for task, dataset in CASES:
        for density in DENSITIES:
            sbt, dense = models(task, dataset, density)
            artifact, artifact_size = artifact_of(sbt, task)
            preset = ROOT / "sbts" / "configs" / "paper" / f"{task}_{dataset}_sbt.yaml"
            paper = summarize_config(preset, accounting="paper", density=density,
                                     qkv_density=density if task == "classification" else None)
            dense_params = sum(p.numel() for p in dense.parameters())
            same_structure = sum(w.numel() for name, w in dense.state_dict().items() if name.endswith(".weight")
                                 and "norm" not in name)
            for form in WEIGHT_FORMS:
                generated = c_sources(artifact, form)
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp)
                    (folder / "sbts.h").write_text(generated.header)
                    (folder / "sbts.c").write_text(generated.source)
                    x86 = measure_footprint(folder, compiler)
                    arm = (measure_footprint(folder, CORTEX_M4[0], CORTEX_M4[1], CORTEX_M4[2])
                           if shutil.which(CORTEX_M4[0]) else None)
                    image = cortex_m4_image(folder)
                sizes = generated.sizes
                trained_floats = sizes["other_constant_bytes"]  # norms, biases, tables, masks, scaler
                row = {"task": task, "dataset": dataset, "density": density, "weights": form,
                       "linear_weight_bytes": sizes["linear_weight_bytes"], "constant_bytes": sizes["constant_bytes"],
                       "arena_bytes": sizes["arena_bytes"], "x86_flash": x86["flash_bytes"],
                       "x86_ram": x86["ram_bytes"], "m4_flash": arm and arm["flash_bytes"],
                       "m4_ram": arm and arm["ram_bytes"], "m4_image_flash": image and image["flash"],
                       "m4_image_ram": image and image["ram"], "sbts_file_bytes": artifact_size,
                       "paper_sbt_bits": paper["sbt"]["bits"], "paper_ratio": paper["ratio"]["storage"],
                       "dense_float32_bytes": 4 * dense_params,
                       "same_structure_dense_linear_bytes": 4 * same_structure,
                       "other_constant_bytes": trained_floats}
                row["ratio_linear_vs_same_structure"] = round(row["same_structure_dense_linear_bytes"]
                                                              / row["linear_weight_bytes"], 1)
                row["ratio_constants_vs_paper_dense"] = round(row["dense_float32_bytes"] / row["constant_bytes"], 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def callgrind_instructions(folder: Path, compiler: str, flags: tuple[str, ...]) -> int | None:
    if shutil.which("valgrind") is None:
        return None
    (folder / "harness.c").write_text(HARNESS)
    program = folder / "harness"
    subprocess.run([compiler, "-std=c99", *flags, "-o", str(program), str(folder / "sbts.c"),
                    str(folder / "harness.c"), "-lm"], check=True, capture_output=True)
    counts = []
    for calls in CALLGRIND_CALLS:
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.out",
                               str(program), str(calls)], capture_output=True, text=True, check=True)
        counts.append(int(re.search(r"Collected : (\d+)", done.stderr).group(1)))
    return (counts[1] - counts[0]) // (CALLGRIND_CALLS[1] - CALLGRIND_CALLS[0])


def peak_macs_per_second(info: dict) -> tuple[float, str]:
    """One core's single-precision multiply-accumulates per second: clock x FMA units x vector width."""
    mhz = 0.0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.findall(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo.read_text())
        mhz = max(map(float, found)) if found else 0.0
    per_cycle = next((n for flag, n in MACS_PER_CYCLE.items() if flag in info["simd"]), 4)
    return mhz * 1e6 * per_cycle, f"{mhz:.0f} MHz x {per_cycle} MACs/cycle (one core)"


def executed_macs(config, tensors, last_step_only: bool, sparse: bool) -> int:
    """Multiply-accumulates of one window: the dense products an engine multiplies, or, for the C engine on a
    sparse-binary model, the kept weights it visits (and attention's products)."""
    import numpy as np

    from sbts.runtime.network import MacCounter, forward

    counter = MacCounter()
    forward(config, tensors, np.zeros((1, config.max_len, config.in_channels), np.float32),
            last_step_only=last_step_only, counter=counter)
    if not sparse:
        return counter.total
    total = 0
    for layer, macs in counter.by_layer.items():
        weight = tensors.get(f"{layer}.weight")
        total += macs if weight is None else round(macs * float(np.count_nonzero(weight)) / weight.size)
    return total


def speed_rows(seconds: float, with_callgrind: bool) -> tuple[list[dict], str]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from sbts.export.c_build import CModel, compile_library, find_compiler
    from sbts.export.c_source import c_sources
    from sbts.export.onnx import export_onnx
    from sbts.registry import runtime_class
    from sbts.runtime.artifact import network_tensors

    torch.set_num_threads(1)
    compiler = find_compiler()
    info = machine_info()
    peak, peak_note = peak_macs_per_second(info)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task, dataset in CASES:
            sbt, dense = models(task, dataset)
            config = sbt.config
            last = runtime_class(task).last_step_only
            rows_in = config.max_len - (task == "forecasting")
            x = np.random.default_rng(0).standard_normal((1, config.max_len, config.in_channels)).astype(np.float32)
            artifact, _ = artifact_of(sbt, task)
            dense_artifact, _ = artifact_of(dense, task)
            runtime = runtime_class(task)(artifact)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
            sessions = {}
            for name, model in (("sbt", sbt), ("dense", dense)):
                session = ort.InferenceSession(str(export_onnx(model, folder / f"{task}-{name}.onnx")), options,
                                               providers=["CPUExecutionProvider"])
                feed = {"x": x}
                if len(session.get_inputs()) > 1:
                    feed["padding_mask"] = np.zeros((1, x.shape[1]), bool)
                sessions[name] = (session, feed)
            xt = torch.from_numpy(x)
            fns, macs, instructions = {}, {}, {}

            def eager(model=dense):
                with torch.inference_mode():
                    model(xt)

            fns["torch eager dense"] = eager
            macs["torch eager dense"] = executed_macs(dense.config, network_tensors(dense_artifact), False, False)
            fns["numpy runtime sbt"] = lambda: runtime.forward(x, last_step_only=last)
            macs["numpy runtime sbt"] = executed_macs(config, runtime.tensors, last, False)
            for name in ("sbt", "dense"):
                session, feed = sessions[name]
                fns[f"onnxruntime {name}"] = lambda session=session, feed=feed: session.run(None, feed)
                macs[f"onnxruntime {name}"] = (macs["torch eager dense"] if name == "dense"
                                               else executed_macs(config, runtime.tensors, False, False))
            rows_x = x[0, :rows_in]
            variants = [("C -O2 sbt lists", artifact, "lists", None), ("C -O2 sbt ternary", artifact, "ternary", None),
                        ("C -O2 sbt mask", artifact, "mask", None),
                        ("C -O2 dense", dense_artifact, "lists", None),
                        ("C -O3 -march=native sbt lists", artifact, "lists", NATIVE_FLAGS)]
            for label, which, form, flags in variants:
                generated = c_sources(which, form)
                sub = folder / (task + "-" + re.sub(r"\W+", "-", label))
                library = compile_library(generated, sub, compiler, *( [flags] if flags else []))
                out_dim = int(generated.header.split("#define SBTS_OUT_DIM ")[1].split()[0])
                c = CModel(library, config.in_channels, out_dim)
                fns[label] = direct_forward(c, rows_x)
                macs[label] = executed_macs(which.config, network_tensors(which), last, which is artifact)
                if with_callgrind and flags is None:
                    instructions[label] = callgrind_instructions(sub, compiler, ("-O2",))
            timings = {name: median_ms(fn, seconds) for name, fn in fns.items()}
            for name, ms in timings.items():
                row = {"task": task, "dataset": dataset, "density": config.density, "engine": name,
                       "ms": round(ms, 4), "vs_torch_dense": round(timings["torch eager dense"] / ms, 2),
                       "vs_onnxruntime_sbt": round(timings["onnxruntime sbt"] / ms, 2),
                       "macs": macs[name], "peak_fraction": round(macs[name] / (ms / 1e3) / peak, 4) if peak else None,
                       "instructions": instructions.get(name)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        rows += stream_rows(folder, compiler, seconds)
    return rows, peak_note


def direct_forward(c, rows):
    """``c.forward(rows)`` with the ctypes pointers made once, as a caller on a hot path would: the time is the
    engine's and one foreign call's."""
    import ctypes

    import numpy as np

    x = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros(c.out_dim, np.float32)
    floats = ctypes.POINTER(ctypes.c_float)
    x_ptr, out_ptr, n = x.ctypes.data_as(floats), out.ctypes.data_as(floats), len(x)
    return lambda: c.lib.sbts_forward(x_ptr, n, out_ptr)


def direct_stream(c, rows):
    """``c.stream_update`` over the rows in turn, the pointers made once."""
    import ctypes
    import itertools

    import numpy as np

    x = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros(c.out_dim, np.float32)
    floats = ctypes.POINTER(ctypes.c_float)
    pointers = itertools.cycle([row.ctypes.data_as(floats) for row in x])
    out_ptr = out.ctypes.data_as(floats)
    return lambda: c.lib.sbts_stream_update(next(pointers), out_ptr)


def stream_rows(folder: Path, compiler: str, seconds: float) -> list[dict]:
    """Per observation on SMD: the streamable SBT's one-step update in C and numpy, against recomputing the
    window (eager PyTorch dense, ONNX Runtime)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from sbts.export.c_build import CModel, compile_library
    from sbts.export.c_source import c_sources
    from sbts.export.onnx import export_onnx
    from sbts.runtime.model import AnomalyRuntime

    sbt, dense = models("anomaly", "SMD", None, **STREAMABLE)
    artifact, _ = artifact_of(sbt, "anomaly")
    runtime = AnomalyRuntime(artifact)
    config = sbt.config
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((4096, config.in_channels)).astype(np.float32)
    window = torch.from_numpy(rows[None, :config.max_len])
    fns = {}

    def eager():
        with torch.inference_mode():
            dense(window)

    fns["torch eager dense, window per step"] = eager
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(export_onnx(sbt, folder / "stream.onnx")), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"x": rows[None, :config.max_len]}
    fns["onnxruntime sbt, window per step"] = lambda: session.run(None, feed)
    stream = runtime.stream()
    counter = iter(range(10**9))
    fns["numpy runtime sbt, cached step"] = lambda: stream.update(rows[next(counter) % len(rows)])
    for label, flags in (("C -O2 sbt, cached step", None), ("C -O3 -march=native sbt, cached step", NATIVE_FLAGS)):
        library = compile_library(c_sources(artifact), folder / re.sub(r"\W+", "-", label), compiler,
                                  *([flags] if flags else []))
        fns[label] = direct_stream(CModel(library, config.in_channels, 1), rows)
    timings = {name: median_ms(fn, seconds) for name, fn in fns.items()}
    out = []
    for name, ms in timings.items():
        row = {"task": "anomaly stream", "dataset": "SMD", "density": config.density, "engine": name,
               "ms": round(ms, 5), "vs_torch_dense": round(timings["torch eager dense, window per step"] / ms, 1),
               "vs_onnxruntime_sbt": round(timings["onnxruntime sbt, window per step"] / ms, 1)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def footprint_markdown(rows: list[dict], command: str, info: dict) -> str:
    lines = ["## C export: footprint", "", f"`{command}`. Machine: {machine_line(info)}.", "",
             "Bytes. *linear weights*: what the C keeps for the linears (2-bit codes, or 1-bit masks plus an 8-byte "
             "seed, and one float alpha each); *constants*: all constant arrays (also norms, biases, positional "
             "table, Q/K/V mask bits, input statistics). *x86 / M4 flash and RAM*: `size` on the -Os object "
             "(flash = text + data, read-only data included; RAM = data + bss, the arena included); *M4 image*: "
             "linked for a Cortex-M4 with newlib's libm and start-up code, unused sections dropped. *dense f32*: "
             "4 bytes per parameter of the paper's dense model (the denominator of the paper's ratio); *same-"
             "structure dense linears*: 4 bytes per weight of the same linears. *paper bits*: the paper's "
             "accounting of the SBT.", "",
             "| task | dataset | density | weights | linear weights | constants | arena | x86 flash | x86 RAM | "
             "M4 flash | M4 RAM | M4 image flash | M4 image RAM | .sbts file | paper bits (ratio) | dense f32 | "
             "same-structure dense linears ÷ linear weights | dense f32 ÷ constants |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['dataset']} | {r['density']:g} | {r['weights']} | "
                     f"{r['linear_weight_bytes']:,} | {r['constant_bytes']:,} | {r['arena_bytes']:,} | "
                     f"{r['x86_flash']:,} | {r['x86_ram']:,} | {r['m4_flash'] or '–'} | {r['m4_ram'] or '–'} | "
                     f"{r['m4_image_flash'] or '–'} | {r['m4_image_ram'] or '–'} | {r['sbts_file_bytes']:,} | "
                     f"{r['paper_sbt_bits']:,} ({r['paper_ratio']:.1f}×) | {r['dense_float32_bytes']:,} | "
                     f"{r['ratio_linear_vs_same_structure']}× | {r['ratio_constants_vs_paper_dense']}× |")
    return "\n".join(lines)


def peak_percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.1f} %"


def speed_markdown(rows: list[dict], command: str, info: dict, peak_note: str) -> str:
    lines = ["## C export: speed", "", f"`{command}`. Machine: {machine_line(info)}. One thread everywhere "
             "(torch.set_num_threads(1), ONNX Runtime intra-op 1, numpy's BLAS 1).", "",
             "Batch 1, median milliseconds per call over 7 rounds after warm-up, ratios against eager PyTorch dense "
             "float32 and ONNX Runtime float32 (the SBT's graph) measured in the same run. Eager PyTorch and ONNX "
             "Runtime compute every step of the window; the numpy runtime and the C engine only what the task's "
             "output reads (Step-T: one query row; the last layer: one row). *MACs*: the multiply-accumulates the "
             "engine executes (for the C engine on an SBT: the kept weights it visits); *peak*: their rate over "
             f"the machine's single-core peak ({peak_note}). *instructions*: valgrind callgrind, per call "
             "(-O2 build).", "",
             "| task | dataset | density | engine | ms | × vs torch dense | × vs ORT sbt | MACs | of peak | "
             "instructions |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['dataset']} | {r['density']:g} | {r['engine']} | {r['ms']:.4f} | "
                     f"{r['vs_torch_dense']} | {r['vs_onnxruntime_sbt']} | {r.get('macs') or '–'} | "
                     f"{peak_percent(r.get('peak_fraction'))} | "
                     f"{r.get('instructions') or '–'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="short rounds, no callgrind")
    parser.add_argument("--only", choices=["footprint", "speed"])
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    command = "python benchmarks/c_engine.py" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    info = machine_info()
    doc = ROOT / "docs" / "benchmarks.md"
    with threadpool_limits(limits=1):
        if args.only in (None, "footprint"):
            rows = footprint_rows()
            if args.write:
                replace_section(doc, "c-footprint", footprint_markdown(rows, command, info))
        if args.only in (None, "speed"):
            rows, peak_note = speed_rows(0.3 if args.quick else 2.0, not args.quick)
            if args.write:
                replace_section(doc, "c-speed", speed_markdown(rows, command, info, peak_note))


if __name__ == "__main__":
    main()
