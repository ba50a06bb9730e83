"""`python -m bench.studies.speed`: what a spiking network costs next to its own ANN, on this machine.

On one architecture and one batch `[B, C, H, W]`, side by side:

    training   one direct-training step at T_train (forward, backward, optimizer), under bfloat16
               autocast on a GPU as `fit` trains / (T_train x one ANN training step)
    curve      the harness's whole accuracy curve up to T_max on the batch (`bench.harness.evaluate`)
               / (T_max x one ANN forward in eval mode)
    memory     peak memory of one direct-training step as T grows

for the neuron's plain loop, the fused loop, and the fused loop compiled with `torch.compile`;
and, under torch.profiler, where a training step and the curve spend their time (convolutions,
batch norm, ReLU or neuron, the harness's counters, the rest) next to the ANN's: CPU time, or
the GPU's own kernel time on CUDA.
The ANN is the same architecture with ReLUs, same batch, same memory format and thread count.
Training steps of all contestants are interleaved and the best of `--repeats` rounds is kept;
each curve is one run of the harness against the mean of sustained ANN forwards timed around it,
so that load from other processes on a shared machine hurts every contestant alike. On a CPU
with one thread the clock is the process's CPU time (other processes cannot inflate it);
otherwise it is wall time. Results go to `runs/perf.json` (`--output results/perf.md` publishes
them beside the reference results); the Markdown beside it is rendered from it
(`bench.studies.speed_report`). Memory is measured in a fresh process per point (peak resident
size on Linux CPUs, `torch.cuda.max_memory_allocated` on GPUs).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from bench.architectures import build_architecture
from bench.efficiency import PROFILER_EVENT as COUNTER_EVENT
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.harness import evaluate
from bench.records import git_commit, hardware, package_versions
from bench.spiking import DirectEncoder, LIFNeuron, SpikingNetwork, Surrogate, replace_relus
from bench.spiking.neurons import PROFILER_EVENT as NEURON_EVENT
from bench.studies.speed_report import print_table, render

VARIANTS = ("plain", "fused", "compiled")
# How each variant runs the neuron loop: `LIFNeuron(fused=...)`, `SpikingNetwork(compile_neurons=...)`.
LOOPS = {"plain": (False, False), "fused": (True, False), "compiled": (True, True)}
# What the process's allocator was told from outside (deployment advice, never set by the package).
ALLOCATOR_ENV = (
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_CONF",
)
DEFAULT_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
# Large blocks go straight to the OS and back, so the resident size follows live memory.
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m bench.studies.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="cifar_resnet8")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--time-steps-train", type=int, default=4)
    parser.add_argument("--time-max", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, help="steps per simulation chunk (default: the harness's choice)")
    parser.add_argument("--memory-steps", default="1,4,16", help="comma-separated T for the memory table ('' skips it)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"neuron loops to time, from {', '.join(VARIANTS)}"
    )
    parser.add_argument("--leak", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=10, help="rounds of every training measurement")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW for both networks")
    parser.add_argument("--output", default="runs/perf.md", help="where the report goes (its JSON beside it)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one memory measurement, JSON in and out
    return parser


class Clock:
    """CPU time of the process on a one-thread CPU run, synchronized wall time otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_time = device.type == "cpu" and torch.get_num_threads() == 1
        self.name = "process CPU time" if self.cpu_time else "wall time"

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu_time else time.perf_counter()

    def measure(self, work) -> float:
        start = self.now()
        work()
        return self.now() - start


class Bench:
    """One architecture, its ANN and its spiking copy, one batch, and the knobs of each variant."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.memory_format = torch.contiguous_format if args.no_channels_last else torch.channels_last
        torch.manual_seed(0)
        self.ann = self._place(build_architecture(args.architecture, args.classes, image_size=args.image_size))
        # One spiking copy per way of running the neuron loop; all start from the ANN's weights.
        self.snns = {variant: self._place(spiking_copy(self.ann, args.leak, *LOOPS[variant])) for variant in VARIANTS}
        self.images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).contiguous(
            memory_format=self.memory_format
        )
        self.labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
        self.clock = Clock(device)

    def _place(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def training_step(self, model: nn.Module, optimizer, time_steps: int | None, samples: int | None = None):
        """One step on the batch (or its first `samples` images); `time_steps` None trains the ANN."""
        images, labels = self.images[:samples], self.labels[:samples]

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            # As `fit` trains (train.amp): bfloat16 autocast on a GPU, float32 elsewhere.
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                if time_steps is None:
                    logits = model(images)
                else:
                    model.reset_state()
                    logits = model(images, time_steps).mean(0)
                loss = nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()

        return step


def spiking_copy(
    ann: nn.Module, leak: float, fused: bool = True, compiled: bool = False, checkpoint: bool = False
) -> SpikingNetwork:
    """The direct method's network: LIF neurons (triangular surrogate) for ReLUs, direct input."""
    body = copy.deepcopy(ann)
    replace_relus(
        body, lambda name: LIFNeuron(threshold=1.0, leak=leak, surrogate=Surrogate("triangular"), fused=fused)
    )
    return SpikingNetwork(body, DirectEncoder(), compile_neurons=compiled, checkpoint=checkpoint)


def interleaved(
    clock: Clock, contestants: dict[str, object], repeats: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Best and median of `repeats` rounds; every round measures every contestant once, in turn."""
    for work in contestants.values():
        for _ in range(warmup):
            work()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, work in contestants.items():
            times[name].append(clock.measure(work))
    return {
        name: {"best_s": min(values), "median_s": sorted(values)[len(values) // 2]} for name, values in times.items()
    }


def measure_training(bench: Bench, variants: list[str]) -> dict:
    steps = bench.args.time_steps_train
    ann_optimizer = torch.optim.SGD(bench.ann.parameters(), lr=1e-3, momentum=0.9)
    bench.ann.train()
    contestants = {"ann": bench.training_step(bench.ann, ann_optimizer, None)}
    for variant in variants:
        snn = bench.snns[variant].train()
        contestants[variant] = bench.training_step(snn, torch.optim.SGD(snn.parameters(), lr=1e-3, momentum=0.9), steps)
    times = interleaved(bench.clock, contestants, bench.args.repeats)
    for variant in variants:
        times[variant]["ratio"] = times[variant]["best_s"] / (steps * times["ann"]["best_s"])
    times["constant_prefix"] = bench.snns[variants[-1]].uses_constant_prefix
    return times


# Where the time goes: the CPU time of these profiler events, their children included.
STEP_PARTS = {
    "convolutions": ("aten::convolution", "autograd::engine::evaluate_function: ConvolutionBackward0"),
    "batch norm": ("aten::batch_norm", "autograd::engine::evaluate_function: NativeBatchNormBackward0"),
    "ReLU or neuron": (
        "aten::relu",
        "aten::relu_",
        "autograd::engine::evaluate_function: ReluBackward0",
        NEURON_EVENT,
        "autograd::engine::evaluate_function: _LIFSequenceBackward",
    ),
}
CURVE_PARTS = {
    "convolutions": ("aten::convolution",),
    "batch norm": ("aten::batch_norm",),
    "ReLU or neuron": ("aten::relu", "aten::relu_", NEURON_EVENT),
    "spike and operation counters": (COUNTER_EVENT,),
}


def profiled_parts(work, parts: dict[str, tuple[str, ...]], scale: float, device: torch.device | None = None) -> dict:
    """The time of each part of `work()` (`parts`: its profiler events), the rest as `other`, and
    the `total`, in microseconds times `scale`: CPU time, or on a GPU the device's time (kernels)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    on_gpu = device is not None and device.type == "cuda"
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        work()
        if on_gpu:
            torch.cuda.synchronize(device)
    time_of = "device_time_total" if on_gpu else "cpu_time_total"
    events = {event.key: event for event in profiler.key_averages()}
    measured = {
        part: scale * sum(getattr(events[key], time_of) for key in keys if key in events)
        for part, keys in parts.items()
    }
    total = scale * sum(getattr(event, "self_" + time_of) for event in events.values())
    return {**measured, "other": total - sum(measured.values()), "total": total}


def profile_training(bench: Bench, variant: str = "fused", steps: int = 3) -> dict:
    """ms per training step in each part (`STEP_PARTS`, the rest as `other`), under torch.profiler:
    the ANN's step times T_train beside the spiking step, for the default loop."""
    parts = {}
    for name, model, time_steps in (
        ("ann", bench.ann, None),
        ("snn", bench.snns[variant], bench.args.time_steps_train),
    ):
        model.train()
        step = bench.training_step(model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9), time_steps)
        step()
        scale = (bench.args.time_steps_train if time_steps is None else 1) / (1000 * steps)  # µs -> ms per SNN step
        parts[name] = profiled_parts(lambda step=step: [step() for _ in range(steps)], STEP_PARTS, scale, bench.device)
    return {"variant": variant, "steps": steps, "parts": parts}


def curve_grid(horizon: int) -> list[int]:
    """The T read on a curve to `horizon`: the default grid below it, and the horizon itself."""
    return sorted({t for t in DEFAULT_GRID if t < horizon} | {horizon})


def profile_curve(bench: Bench, variant: str, horizon: int = 200) -> dict:
    """ms per time step in each part (`CURVE_PARTS`, the rest as `other`), under torch.profiler:
    the harness's curve to `horizon` on the batch beside `horizon` ANN forwards."""
    snn, batch = bench.snns[variant].eval(), [(bench.images, bench.labels)]
    bench.ann.eval()
    grid = curve_grid(horizon)

    def curve() -> None:
        evaluate(snn, batch, grid, bench.device, chunk_size=bench.args.chunk_size, num_classes=bench.args.classes)

    def forwards() -> None:
        with torch.no_grad():
            for _ in range(horizon):
                bench.ann(bench.images)

    evaluate(snn, batch, [1, 2], bench.device, chunk_size=bench.args.chunk_size)  # warm-up, compiles
    forwards()
    scale = 1 / (1000 * horizon)  # µs in all -> ms per step
    parts = {
        "ann": profiled_parts(forwards, CURVE_PARTS, scale, bench.device),
        "snn": profiled_parts(curve, CURVE_PARTS, scale, bench.device),
    }
    return {"variant": variant, "time_steps": horizon, "parts": parts}


def measure_curve(bench: Bench, variants: list[str]) -> dict:
    """The harness's curve on one batch per variant, against T_max ANN forwards timed around it."""
    horizon = bench.args.time_max
    grid = curve_grid(horizon)
    bench.ann.eval()

    def ann_forwards(count: int = 100) -> float:
        """The mean of a sustained run, like the curve's own time (a best single forward would flatter the ANN)."""
        with torch.no_grad():
            bench.ann(bench.images)
            return bench.clock.measure(lambda: [bench.ann(bench.images) for _ in range(count)]) / count

    batch = [(bench.images, bench.labels)]

    def curve(variant: str, counting: bool) -> dict:
        snn = bench.snns[variant].eval()
        evaluate(snn, batch, [1, 2], bench.device, chunk_size=bench.args.chunk_size)  # warm-up, compiles
        chosen = {}
        seconds = bench.clock.measure(
            lambda: chosen.update(
                evaluation=evaluate(
                    snn,
                    batch,
                    grid,
                    bench.device,
                    chunk_size=bench.args.chunk_size,
                    num_classes=bench.args.classes,
                    count_operations=counting,
                )
            )
        )
        return {"seconds": seconds, "chunk_size": chosen["evaluation"].chunk_size}

    results, ann_times = {}, [ann_forwards()]
    for variant in variants:
        results[variant] = curve(variant, counting=True)
        ann_times.append(ann_forwards())
    # The same simulation without the harness's operation counters, for the fastest loop.
    results["uncounted"] = {**curve(variants[-1], counting=False), "variant": variants[-1]}
    ann_times.append(ann_forwards())
    ann_forward = min(ann_times)
    for variant in [*variants, "uncounted"]:
        results[variant]["ratio"] = results[variant]["seconds"] / (horizon * ann_forward)
    results["ann"] = {"forward_s": ann_forward, "seconds": horizon * ann_forward}
    return results


def measure_memory(args: argparse.Namespace, device: torch.device) -> dict:
    """Peak memory of one training step: ANN, and the spiking network per T with each way of storing."""
    steps = [int(t) for t in args.memory_steps.split(",") if t.strip()]
    if device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
        return {}  # the peak resident size can be reset on Linux only
    table = {"ann": _memory_of(args, device, "ann", 1)}
    for time_steps in steps:
        table[str(time_steps)] = {
            kind: _memory_of(args, device, kind, time_steps) for kind in ("plain", "fused", "checkpoint")
        }
    return table


def _memory_of(args: argparse.Namespace, device: torch.device, kind: str, time_steps: int) -> float:
    request = {"args": vars(args), "device": str(device), "kind": kind, "time_steps": time_steps}
    if device.type == "cuda":
        return memory_probe(request)
    # A fresh process per measurement: the peak resident size only ever grows within one.
    command = [sys.executable, "-m", "bench.studies.speed", "--memory-probe", json.dumps(request)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **MEMORY_PROBE_ENV}, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"memory probe failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(request: dict) -> float:
    """MiB above the settled process that one training step of `kind` at T reaches at its peak."""
    args = argparse.Namespace(**request["args"])
    device = torch.device(request["device"])
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args, device)
    kind, time_steps = request["kind"], request["time_steps"]
    if kind == "ann":
        model = bench.ann
    else:
        model = bench._place(spiking_copy(bench.ann, args.leak, fused=kind != "plain", checkpoint=kind == "checkpoint"))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    steps = None if kind == "ann" else time_steps
    bench.training_step(model, optimizer, steps, samples=2)()  # imports and one-time buffers are not the step's memory
    step = bench.training_step(model, optimizer, steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak resident size restarts from the current one (Linux)
    before = _status_mib("VmRSS")
    step()
    return _status_mib("VmHWM") - before


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_spikingjelly(bench: Bench) -> dict | None:
    """SpikingJelly's multi-step LIF (its PyTorch path) in the same body, when it is installed."""
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        return None
    steps, leak = bench.args.time_steps_train, bench.args.leak

    class MultiStep(nn.Module):
        """SpikingJelly's node on our flattened `[T*B, ...]` convention."""

        def __init__(self) -> None:
            super().__init__()
            # Its PyTorch path: `backend="torch"` before 2.0; 2.0 has no backend argument and loops in PyTorch.
            backend = {"backend": "torch"} if "backend" in inspect.signature(neuron.LIFNode).parameters else {}
            self.node = neuron.LIFNode(
                tau=1 / (1 - leak),
                decay_input=False,
                v_threshold=1.0,
                v_reset=None,
                surrogate_function=surrogate.ATan(),
                step_mode="m",
                **backend,
            )

        def forward(self, current):
            return self.node(current.unflatten(0, (steps, -1))).flatten(0, 1)

    body = copy.deepcopy(bench.ann)
    replace_relus(body, lambda name: MultiStep())
    body.train()
    optimizer = torch.optim.SGD(body.parameters(), lr=1e-3, momentum=0.9)
    images = bench.images.unsqueeze(0).expand(steps, *bench.images.shape).flatten(0, 1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        functional.reset_net(body)
        logits = body(images).unflatten(0, (steps, -1)).mean(0)
        nn.functional.cross_entropy(logits, bench.labels).backward()
        optimizer.step()

    ann_optimizer = torch.optim.SGD(bench.ann.parameters(), lr=1e-3, momentum=0.9)
    bench.ann.train()
    times = interleaved(
        bench.clock,
        {"ann": bench.training_step(bench.ann, ann_optimizer, None), "spikingjelly": step},
        bench.args.repeats,
    )
    return {
        "best_s": times["spikingjelly"]["best_s"],
        "ratio": times["spikingjelly"]["best_s"] / (steps * times["ann"]["best_s"]),
        "version": importlib.metadata.version("spikingjelly"),
    }


def cpu_description() -> str:
    """The CPU beyond its marketing name (a VM may show only "Intel(R) Xeon(R) Processor"): vendor,
    family and model numbers, and the vector units that PyTorch's CPU kernels use."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    units = [unit for unit, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile")) if flag in flags]
    return (
        f"{fields.get('model name', '?')} ({fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}{', ' + ', '.join(units) if units else ''})"
    )


def machine(device: torch.device, clock: Clock) -> dict:
    return {
        "hardware": hardware(device),
        "cpu": cpu_description() if device.type == "cpu" else None,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_start": round(os.getloadavg()[0], 2),
        "clock": clock.name,
        "platform": platform.platform(),
        "versions": package_versions(),
        "commit": git_commit(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but CUDA is not available here; use --device cpu")
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise UserError(f"unknown --variants {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}")
    bench = Bench(args, device)
    result = {"settings": _settings(args, bench), "machine": machine(device, bench.clock)}
    result["training"] = measure_training(bench, variants)
    result["training_profile"] = profile_training(bench) if "fused" in variants else None
    result["curve"] = measure_curve(bench, variants)
    result["curve_profile"] = profile_curve(bench, variants[-1], min(args.time_max, 200))
    result["memory"] = measure_memory(args, device) if args.memory_steps.strip() else {}
    result["spikingjelly"] = measure_spikingjelly(bench)
    result["variants"] = variants
    result["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    return result


def _settings(args: argparse.Namespace, bench: Bench) -> dict:
    return {
        "architecture": args.architecture,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "classes": args.classes,
        "time_steps_train": args.time_steps_train,
        "time_max": args.time_max,
        "neuron": f"LIF, leak {args.leak}, threshold 1, reset by subtraction, triangular surrogate",
        "input": "direct (constant in time); random images and labels",
        "memory_format": "channels-last" if bench.memory_format == torch.channels_last else "NCHW",
        "device": str(bench.device),
        "repeats": args.repeats,
        "allocator": allocator_settings(),
        "command": getattr(args, "command", None) or _command([]),
        "json": Path(args.output).with_suffix(".json").name,
    }


def _allocator_environment() -> list[str]:
    return [f"{name}={shlex.quote(os.environ[name])}" for name in ALLOCATOR_ENV if name in os.environ]


def allocator_settings() -> str:
    """The allocator settings this process was started with (the package sets none)."""
    return " ".join(_allocator_environment()) or "the system's default"


def _command(argv: list[str]) -> str:
    """The command line as typed, with the allocator settings of its environment, if any."""
    return " ".join([*_allocator_environment(), shlex.join(["python", "-m", "bench.studies.speed", *argv])])


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _run(argv))


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return 0
    args.command = _command(sys.argv[1:] if argv is None else argv)
    result = run(args)
    print_table(result)
    output = Path(args.output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {output.parent} ({error.strerror}); pass another --output") from None
    output.with_suffix(".json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    output.write_text(render(result))
    print(f"wrote {output} and {output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
