"""The device check: the suite's accelerator path in stages, under a time budget, with a summary after each.

    python -m bench.studies.device_check --device cuda --data-root device-data --out OUT
    python -m bench.studies.device_check --device cpu --smoke --out OUT     # the same stages, tiny (CI)

Stages, in order, each skipped when the time left cannot hold it:

1. environment: versions, the device, the TF32 and cuDNN flags as the suite runs them;
2. smoke: each paper config (`cifar100_resnet50`, `imagenette_resnet50`) end to end through
   `run_all` on a few images (CIFAR-100 written in its official format, since it cannot travel;
   Imagenette from `--data-root`, a subset made by `scripts/make_device_data.py`);
3. training: a direct SNN step at T_train = 10 under autocast (bfloat16), as `fit` runs it, at each
   config's image size and per-process batch: milliseconds per step and peak device memory;
4. evaluation: the simulation of a batch to `--horizon` steps (1000) in the harness's chunks, image
   steps per second, and the neurons' share of the time (device time on CUDA, from the profiler);
5. neurons: the fused LIF loop (one Triton kernel per call on CUDA) against the same loop step by
   step and the plain one, on one layer's currents, forward and backward: time, and whether spikes
   and gradients agree.

`OUT/device_check.json` and `OUT/device_check.md` are rewritten after every stage, so a check cut
short by its time limit still returns what it measured; everything else goes to a scratch folder.
The exit status is 1 when a stage failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.harness import choose_chunk_size, chunk_memory
from bench.records import package_versions, read_records
from bench.spiking import LIFNeuron, Surrogate, kernels
from bench.spiking.neurons import PROFILER_EVENT as NEURON_EVENT
from bench.studies.speed import Bench, Clock

CONFIGS = {"cifar100_resnet50": ("cifar100", 32, 128), "imagenette_resnet50": ("imagenette", 160, 64)}
SUMMARY = "device_check"


class Check:
    """The run's settings, its deadline and the results so far; `save()` writes the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.deadline = time.monotonic() + args.budget_s
        self.out = Path(args.out)
        self.scratch = Path(tempfile.mkdtemp(prefix="spikebench-device-check-"))
        self.stages: list[dict] = []

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        summary = {"settings": vars(self.args), "stages": self.stages}
        (self.out / f"{SUMMARY}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (self.out / f"{SUMMARY}.md").write_text(markdown(summary))


def markdown(summary: dict) -> str:
    settings = summary["settings"]
    lines = [
        "# Device check",
        "",
        f"`python -m bench.studies.device_check --device {settings['device']}"
        f"{' --smoke' if settings['smoke'] else ''}`, budget {settings['budget_s']} s. Generated after every stage.",
        "",
        "| stage | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for stage in summary["stages"]:
        result = stage.get("error") or "; ".join(f"{k}: {v}" for k, v in stage.get("result", {}).items())
        lines.append(f"| {stage['name']} | {stage['status']} | {stage.get('seconds', '')} | {result} |")
    return "\n".join(lines) + "\n"


def run_stage(check: Check, name: str, needs_s: float, work) -> None:
    """Run one stage unless the budget cannot hold it; record what it returned or how it failed."""
    if check.left_s() < needs_s:
        check.stages.append({"name": name, "status": "skipped", "error": f"{check.left_s():.0f} s left of the budget"})
    else:
        started = time.monotonic()
        try:
            check.stages.append({"name": name, "status": "ok", "result": work(check)})
        except Exception as error:  # noqa: BLE001 (a stage may fail in any way; the next still runs)
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            check.stages.append({"name": name, "status": "failed", "error": detail})
        check.stages[-1]["seconds"] = round(time.monotonic() - started, 1)
    check.save()


def environment(check: Check) -> dict:
    device = check.device
    result = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "packages": ", ".join(f"{k} {v}" for k, v in package_versions().items() if k not in ("python", "torch")),
        "tf32 matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32 cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn benchmark": torch.backends.cudnn.benchmark,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        result.update(
            device=properties.name,
            memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        result.update(device=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return result


def write_cifar100(root: Path, train: int, test: int) -> None:
    """Random images in the official cifar-100-python format (the loader's path, not its data)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        labels = [index % 100 for index in range(count)]
        batch = {"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8), "fine_labels": labels}
        batch.update(coarse_labels=[label // 5 for label in labels], filenames=[f"{i}.png" for i in range(count)])
        (folder / split).write_bytes(pickle.dumps(batch))
    names = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(names))


def smoke(config: str):
    def work(check: Check) -> dict:
        from bench.cli import main

        dataset, _, _ = CONFIGS[config]
        train, test = (20, 8) if check.args.smoke else (1000, 500)
        if dataset == "cifar100":
            root = check.scratch / "data"
            write_cifar100(root, train, test)
        else:
            root = Path(check.args.data_root)
            if not (root / "imagenette2-160").is_dir():
                raise UserError(f"{root}/imagenette2-160 not found: make it with scripts/make_device_data.py")
        results = check.scratch / config
        grid = "[1,4]" if check.args.smoke else "[1,4,10,16,64,256]"
        args = ["--config", config, "--data-root", str(root), "--device", str(check.device), "--quiet"]
        args += ["--epochs", "1", "--results-dir", str(results), "--set", f"cache_dir={results / 'cache'}"]
        for override in (f"data.train_subset={train}", f"data.test_subset={test}", f"eval.time_steps={grid}"):
            args += ["--set", override]
        if check.args.smoke:
            args += ["--set", "data.batch_size=8", "--set", "data.eval_batch_size=8", "--set", "data.workers=0"]
            args += ["--set", "data.image_size=32"] if dataset == "imagenette" else []
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(args)
        if status != 0:
            raise RuntimeError(f"run_all exited {status}")
        frame = read_records(results / dataset / "records.jsonl")
        failed = sorted(set(frame.loc[frame["status"] != "ok", "label"]))
        if failed:
            raise RuntimeError(f"rows failed: {', '.join(failed)}")
        last = frame[frame["time_steps"] == frame["time_steps"].max()]
        return {row["label"]: f"{100 * row['top1']:.1f} %" for _, row in last.iterrows()}

    return work


def bench_for(check: Check, config: str) -> Bench:
    """The speed study's network and batch at the config's size (tiny with --smoke)."""
    _, image_size, batch_size = CONFIGS[config]
    if check.args.smoke:
        image_size, batch_size = 32, 2
    classes = 100 if config.startswith("cifar100") else 10
    args = argparse.Namespace(
        architecture="resnet50" if not check.args.smoke else "cifar_resnet8",
        classes=classes,
        image_size=image_size,
        batch_size=batch_size,
        leak=0.9,
        no_channels_last=False,
        time_steps_train=10,
        repeats=3,
    )
    return Bench(args, check.device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> str:
    if device.type != "cuda":
        return "peak memory not measured on a CPU"
    return f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"


def training(check: Check) -> dict:
    result = {}
    for config in CONFIGS:
        bench = bench_for(check, config)
        snn = bench.snns["fused"].train()
        step = bench.training_step(snn, torch.optim.SGD(snn.parameters(), lr=1e-3, momentum=0.9), 10)

        def autocast_step(step=step) -> None:
            with torch.autocast(check.device.type, dtype=torch.bfloat16):
                step()

        autocast_step()  # warm-up (cuDNN, allocator)
        _peak_reset(check.device)
        seconds = min(bench.clock.measure(autocast_step) for _ in range(3))
        result[config] = f"{1000 * seconds:.0f} ms/step (batch {bench.args.batch_size}), {_peak(check.device)}"
        del bench, snn
    return result


def evaluation(check: Check) -> dict:
    bench = bench_for(check, "cifar100_resnet50")
    snn = bench.snns["fused"].eval()
    horizon = 20 if check.args.smoke else check.args.horizon
    chunk = choose_chunk_size(snn, bench.images, horizon)  # the default budget: a share of free memory
    modelled = chunk_memory(snn, bench.images)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if check.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    def simulate() -> None:
        snn.reset_state()
        with torch.no_grad():
            for start in range(0, horizon, chunk):
                snn(bench.images, min(chunk, horizon - start))

    _peak_reset(check.device)
    simulate()
    measured_peak = _peak(check.device)
    seconds = bench.clock.measure(simulate)
    with torch.profiler.profile(activities=activities) as profiler:
        simulate()
    events = profiler.key_averages()
    device_time = "device_time_total" if check.device.type == "cuda" else "cpu_time_total"
    neurons = sum(getattr(e, device_time, 0) for e in events if e.key == NEURON_EVENT)
    total = sum(getattr(e, "self_" + device_time, 0) for e in events) or 1
    return {
        "image-steps/s": f"{len(bench.images) * horizon / seconds:.0f}",
        "horizon": horizon,
        "chunk": chunk,
        "chunk memory model": f"{modelled.fixed / 2**20:.0f} MiB + {modelled.per_step / 2**20:.1f} MiB/step, "
        f"{modelled.peak(chunk) / 2**20:.0f} MiB at this chunk; measured: {measured_peak}",
        "neurons' share": f"{neurons / total:.0%}",
    }


def neurons(check: Check) -> dict:
    """One layer's loop, forward and backward: the fused loop (one Triton kernel per call on CUDA),
    the same loop step by step (`kernels.disabled()`), and the plain autograd loop of `step`."""
    shape = (10, 8, 64, 16, 16) if check.args.smoke else (10, 64, 256, 56, 56)
    current = torch.randn(shape, device=check.device)
    variants = {
        "fused": (LIFNeuron(leak=0.9, surrogate=Surrogate()), contextlib.nullcontext),
        "per step": (LIFNeuron(leak=0.9, surrogate=Surrogate()), kernels.disabled),
        "plain": (LIFNeuron(leak=0.9, fused=False), contextlib.nullcontext),
    }
    outputs, times = {}, {}
    for name, (layer, mode) in variants.items():
        leaf = current.clone().requires_grad_()

        def run(layer=layer, leaf=leaf, mode=mode):
            with mode():
                layer.reset_state()
                spikes = layer.run_sequence(leaf)
                (grad,) = torch.autograd.grad(spikes.sum() + layer.potential.sum(), leaf)
            return spikes, grad

        outputs[name] = run()
        times[name] = min(Clock(check.device).measure(run) for _ in range(3))
    plain_spikes, plain_grad = outputs["plain"]
    same = all(
        torch.equal(outputs[name][0], plain_spikes) and torch.allclose(outputs[name][1], plain_grad, atol=1e-5)
        for name in ("fused", "per step")
    )
    return {
        "one kernel per call": kernels.usable(current),
        "fused ms": f"{1000 * times['fused']:.1f}",
        "per step ms": f"{1000 * times['per step']:.1f}",
        "plain ms": f"{1000 * times['plain']:.1f}",
        "per step / fused": f"{times['per step'] / times['fused']:.2f}",
        "plain / fused": f"{times['plain'] / times['fused']:.2f}",
        "same spikes and gradients": same,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m bench.studies.device_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--data-root", default="device-data", help="holds imagenette2-160/ (the travelling subset)")
    parser.add_argument("--out", default="runs/device-check", help="where the JSON and Markdown summaries go")
    parser.add_argument("--budget-s", type=float, default=480, help="time budget of the whole check, seconds")
    parser.add_argument("--horizon", type=int, default=1000, help="T of the evaluation stage")
    parser.add_argument("--smoke", action="store_true", help="every stage on tiny sizes (a CPU, CI)")
    return parser


def run(args: argparse.Namespace) -> int:
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but CUDA is not available here; use --device cpu --smoke")
    check = Check(args)
    try:
        # The stages' guesses of their own length, smoke and full, in seconds.
        run_stage(check, "environment", 1, environment)
        for config in CONFIGS:
            run_stage(check, f"smoke {config}", 20 if args.smoke else 120, smoke(config))
        run_stage(check, "training (direct, T_train = 10, autocast)", 5 if args.smoke else 60, training)
        run_stage(check, "evaluation", 5 if args.smoke else 60, evaluation)
        run_stage(check, "neurons (fused vs plain loop)", 2 if args.smoke else 30, neurons)
    finally:
        shutil.rmtree(check.scratch, ignore_errors=True)
    failed = [stage["name"] for stage in check.stages if stage["status"] == "failed"]
    print(f"device check: {len(check.stages) - len(failed)} of {len(check.stages)} stages ok; summary in {check.out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
