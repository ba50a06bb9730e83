"""Run a suite: config -> dataset + architecture -> each method's model -> harness -> records.

`run_suite` validates everything (methods, their options, the dataset, the architecture) before
any training starts, then for each seed and each method setting builds the model, simulates it
once over the T grid and appends one record per T. A setting whose records are already in the
store is skipped, so an interrupted suite resumes where it stopped; a method whose training
diverges is recorded as failed and the suite goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import distributed
from bench.api import MethodEntry, RunContext, get_method, load_plugins
from bench.architectures import build_architecture
from bench.config import RunConfig, hash_of
from bench.data import DatasetSplits, load_dataset
from bench.efficiency import energy_microjoules
from bench.errors import UserError
from bench.harness import BrokenContract, Evaluation, evaluate
from bench.progress import QUIET
from bench.records import (
    Provenance,
    append_records,
    claimed,
    dataset_slug,
    finished_settings,
    set_aside_torn_tail,
    store_path,
)
from bench.reference import resolve_reference_dir
from bench.report import write_leaderboard, write_summaries
from bench.spiking import SpikingModel
from bench.stats import pack_bits
from bench.training import TrainingDiverged


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


@dataclasses.dataclass
class PlannedMethod:
    label: str
    entry: MethodEntry
    options: Any
    setting: str
    setting_hash: str
    reference_key: str
    time_steps: list[int]  # the T this row is read at: the run's grid, or its part up to max_time_steps


def plan_methods(config: RunConfig) -> list[PlannedMethod]:
    """Resolve every method and validate its options, before any work starts."""
    load_plugins(config.plugins)
    planned = []
    base = config.section_hash("data", "model", "train", "eval") + str(config.seed)
    for spec in config.methods:
        entry = get_method(spec.name)
        options = entry.make_options(spec.options, f"methods[{spec.display_name}].options")
        values = dataclasses.asdict(options)
        # Options whose field says `metadata={"show": True}` name the setting even at their default.
        shown = {f.name for f in dataclasses.fields(options) if f.metadata.get("show")}
        changed = {key: value for key, value in values.items() if entry.defaults.get(key) != value or key in shown}
        setting = ", ".join(f"{key}={value}" for key, value in sorted(changed.items()))
        # A capped grid is its own setting (the records it needs differ); uncapped hashes are as before.
        cap = [] if spec.max_time_steps is None else [{"max_time_steps": spec.max_time_steps}]
        # Likewise a method's first version: its settings keep the hashes they had before versions.
        version = [] if entry.version == 1 else [{"version": entry.version}]
        planned.append(
            PlannedMethod(
                spec.display_name,
                entry,
                options,
                setting,
                hash_of([base, spec.name, spec.display_name, values, *cap, *version]),
                reference_key(config, spec.name, values, entry.version),
                spec.time_steps(config.eval.time_steps),
            )
        )
    return planned


# Fields that do not change what a setting measures: where the data lies, how it is loaded and
# how the simulation is cut into chunks. Two runs that differ only in these (and in seed, commit
# or hardware) are runs of the same setting.
NOT_PART_OF_A_SETTING = {"data": ("root", "workers", "eval_batch_size"), "eval": ("chunk_size", "memory_budget_mb")}


def reference_key(config: RunConfig, method: str, options: dict[str, Any], version: int = 1) -> str:
    """What a run shares with a published reference of the same setting, whatever its seed, label,
    machine or commit: the dataset, architecture, training and evaluation settings, method and options."""
    sections = {name: dict(config.to_dict()[name]) for name in ("data", "model", "train", "eval")}
    for name, fields in NOT_PART_OF_A_SETTING.items():
        for key in fields:
            sections[name].pop(key, None)
    sections["data"]["name"] = dataset_slug(config.data.name)
    world = [] if distributed.world_size() == 1 else [{"world_size": distributed.world_size()}]
    return hash_of([sections, method, options, *([] if version == 1 else [version]), *world])


def training_fingerprint(config: RunConfig) -> str:
    """What a trained network depends on: the training data, the architecture and the seed.

    The test subset, batch size of evaluation, workers and data root are left out, so that
    evaluating a cached network on other test images does not train it again.
    """
    data = config.data
    training_data = [data.name, data.train_subset, data.image_size, data.augment, data.batch_size]
    # Processes split a global batch and each normalizes its own part: another network. One
    # process keeps the hashes it had before world sizes were part of them.
    world = [] if distributed.world_size() == 1 else [{"world_size": distributed.world_size()}]
    return hash_of([training_data, dataclasses.asdict(config.model), config.seed, *world])


def make_loader_factory(dataset: DatasetSplits, config: RunConfig, pin_memory: bool = False):
    def make_loader(split: str, *, shuffle: bool = False, batch_size: int | None = None):
        source = getattr(dataset, split)
        if split == "test":  # under torchrun each process evaluates a disjoint shard; the harness adds them up
            source = distributed.shard_for_evaluation(source)
        generator = torch.Generator().manual_seed(config.seed)
        size = batch_size or (config.data.batch_size if split == "train" else config.data.eval_batch_size)
        if split == "train" and shuffle and distributed.world_size() > 1:
            # data.batch_size is the global batch: each process takes its share, so the recipe (batch,
            # learning rate, steps per epoch) is the one a single process runs.
            size = max(size // distributed.world_size(), 1)
        drop_last = shuffle and len(source) // distributed.world_size() > size
        # Shuffled training data is split between the processes of a torchrun; other loaders see it all.
        sampler = (
            distributed.training_sampler(source, shuffle, config.seed, drop_last=False)
            if split == "train" and shuffle
            else None
        )
        return torch.utils.data.DataLoader(
            source,
            batch_size=size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=config.data.workers,
            drop_last=drop_last,
            persistent_workers=config.data.workers > 0,
            pin_memory=pin_memory,  # page-locked batches: the copies to the GPU (non_blocking) overlap compute
        )

    return make_loader


def make_deterministic() -> None:
    """What PyTorch needs for repeatable runs (its reproducibility notes): deterministic algorithms
    (an operation without one raises), cuBLAS's fixed workspace, no TF32 and no cuDNN autotuning.
    Process-wide, so only a run that asks for it (`--deterministic`) calls it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def run_suite(config: RunConfig, reporter=QUIET, rerun: bool = False, summaries: bool = True) -> Path:
    """Run every method of `config`, once per seed; return the leaderboard path.

    With `summaries` the results folder's index and claims report are rewritten too (a study that
    keeps its own report, such as the depth study, turns them off).

    Under torchrun the processes train together, evaluate disjoint shards of the test set and
    add up their counts; only the main process shows progress and writes records and reports.
    """
    distributed.init_from_environment()
    if config.data.batch_size % distributed.world_size():
        raise UserError(
            f"data.batch_size = {config.data.batch_size} is the global batch and must divide among the "
            f"{distributed.world_size()} processes of this run; make it a multiple of {distributed.world_size()}"
        )
    reporter = reporter if distributed.is_main() else QUIET
    device = distributed.local_device(resolve_device(config.device))
    if config.deterministic:
        make_deterministic()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the fastest convolution algorithm per shape, found once
    runs = [dataclasses.replace(config, seed=seed) for seed in config.seeds]
    plans = [plan_methods(run) for run in runs]  # every method and option is checked before any work
    watch = distributed.FailureWatch()
    try:
        for number, (run, planned) in enumerate(zip(runs, plans), start=1):
            if len(runs) > 1:
                reporter.log(f"seed {run.seed} ({number} of {len(runs)})")
            store = _run_seed(run, planned, device, reporter, rerun, watch)
    finally:
        watch.close()
    if distributed.is_main():
        try:
            write_leaderboard(
                store.parent, reference_dir=resolve_reference_dir(config.reference_dir, config.results_dir)
            )
            if summaries:
                write_summaries(Path(config.results_dir))
        except OSError as error:
            raise UserError(
                f"cannot write the leaderboard in {store.parent} ({error.strerror}); the records are safe: free "
                f"space there (a few MB) and run `python -m bench.report --results-dir {config.results_dir}`"
            ) from None
    distributed.barrier()  # the others return once the reports exist
    return store.parent / "leaderboard.md"


def _run_seed(
    config: RunConfig, planned: list[PlannedMethod], device: torch.device, reporter, rerun: bool, watch
) -> Path:
    """Every planned method with one seed; return the records file."""
    dataset, build_ann = _load_data(config)
    build_ann()  # an unknown architecture or bad option fails here, before any training
    store = store_path(config.results_dir, config.data.name)
    if distributed.is_main():
        torn = set_aside_torn_tail(store)
        if torn:
            reporter.warn(f"[yellow]warning: {torn}[/yellow]")
    distributed.barrier()  # every process reads the store before the main one appends to it
    provenance = Provenance.capture(config.section_hash("data", "model", "train", "eval"), config.seed, device)
    loader = make_loader_factory(dataset, config, pin_memory=device.type == "cuda")
    for method in planned:
        with _claim(store, method, config, reporter, rerun) as mine:
            if mine:
                _run_setting(method, config, dataset, build_ann, device, loader, provenance, store, reporter, watch)
    return store


def _load_data(config: RunConfig) -> tuple[DatasetSplits, Callable[[], torch.nn.Module]]:
    """The dataset of the run and a builder of its untrained ANN."""
    # Under torchrun the main process downloads and checks the data first; the others then find it
    # (and the marker of a checked folder) instead of all fetching and decoding it at once.
    with distributed.main_process_first():
        dataset = load_dataset(
            config.data.name,
            config.data.root,
            train_subset=config.data.train_subset,
            test_subset=config.data.test_subset,
            seed=config.seed,
            augment=config.data.augment,
            image_size=config.data.image_size,
        )
    info = dataset.info

    def build_ann() -> torch.nn.Module:
        return build_architecture(
            config.model.name,
            info.num_classes,
            image_size=info.image_size,
            in_channels=info.channels,
            width=config.model.width,
            pooling=config.model.pooling,
        )

    return dataset, build_ann


def _context(method: PlannedMethod, config: RunConfig, dataset, build_ann, device, loader, reporter) -> RunContext:
    return RunContext(
        dataset=dataset,
        architecture=config.model.name,
        build_ann=build_ann,
        options=method.options,
        train=config.train,
        device=device,
        cache_dir=Path(config.cache_dir).expanduser(),
        seed=config.seed,
        fingerprint=training_fingerprint(config),
        compile_neurons=config.compile_neurons,
        data_loader=loader,
        progress=reporter,
    )


def build_row(config: RunConfig, label: str, reporter=QUIET) -> tuple[SpikingModel, DatasetSplits, Callable]:
    """The model of the row `label` of `config`, built as the suite builds it (its trained networks
    come from the cache, or are trained first), with the run's dataset and loader factory: for the
    commands that read a row's model again (`spikebench export`, `spikebench neurobench`)."""
    planned = {method.label: method for method in plan_methods(config)}
    if label not in planned:
        raise UserError(f"no row {label!r} in this config; its rows are {', '.join(planned)}")
    device = resolve_device(config.device)
    dataset, build_ann = _load_data(config)
    loader = make_loader_factory(dataset, config, pin_memory=device.type == "cuda")
    method = planned[label]
    torch.manual_seed(config.seed)
    model = method.entry.build(_context(method, config, dataset, build_ann, device, loader, reporter))
    if not isinstance(model, SpikingModel):
        raise UserError(f"{label}: its build returned a {type(model).__name__}, not a bench.spiking.SpikingModel")
    return model.eval(), dataset, loader


@contextlib.contextmanager
def _claim(store: Path, method: PlannedMethod, config: RunConfig, reporter, rerun: bool):
    """Whether this process runs the setting: not when its records are complete (or it failed,
    unless `rerun`), nor while another run on the same store is working on it. Under torchrun the
    main process decides for all (the store may be on its node only) and holds the claim."""
    holder = claimed(store, method.setting_hash) if distributed.is_main() else contextlib.nullcontext(True)
    with holder as mine:

        def decide() -> str | None:
            if not mine:
                return "busy"
            return None if rerun else finished_settings(store, method.time_steps).get(method.setting_hash)

        state = distributed.from_main(decide)
        if state == "busy":
            reporter.log(f"[dim]{method.label}: another run on {store} is working on it, skipped[/dim]")
        elif state == "ok":
            reporter.log(f"[dim]{method.label}: results already in {store}, skipped (use --rerun to run again)[/dim]")
        elif state == "failed":
            reporter.log(
                f"[dim]{method.label}: failed before (its record says why), skipped (use --rerun to try again)[/dim]"
            )
        yield state is None


def _run_setting(method, config, dataset, build_ann, device, loader, provenance, store, reporter, watch) -> None:
    """One method setting: build, simulate, append its records (and its own ANN's, if it has one).
    Under torchrun a failure of any process is recorded here once and ends every process (`watch`)."""
    context = _context(method, config, dataset, build_ann, device, loader, reporter)

    def record_failure(message: str) -> None:
        base = _base_record(method, context, config, dataset, provenance)
        append_records(store, [{**base, **_failed(message, started)[0]}])

    started = time.perf_counter()
    with watch.recording(record_failure):
        records = _run_method(method, context, config, loader, reporter, watch)
        base = _base_record(method, context, config, dataset, provenance)
        if context.ceiling is not None:
            ceiling = _ceiling_record(base)
            base["ceiling"] = ceiling["label"]
            records += [
                {**ceiling, **record}
                for record in _evaluate(
                    context.ceiling,
                    ceiling["label"],
                    ceiling["setting_hash"],
                    method.time_steps,
                    context,
                    config,
                    loader,
                    reporter,
                    records[0].get("build_wall_s"),
                )
            ]
    if distributed.is_main():
        append_records(store, [{**base, **record} for record in records])


def _run_method(
    method: PlannedMethod, context: RunContext, config: RunConfig, loader, reporter, watch
) -> list[dict[str, Any]]:
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    try:
        model = method.entry.build(context)
        if not isinstance(model, SpikingModel):
            raise BrokenContract(
                f"its build returned a {type(model).__name__}, not a bench.spiking.SpikingModel "
                f"(wrap an ANN in AnalogModel, a spiking body in SpikingNetwork)"
            )
        wall_s = time.perf_counter() - started
        return _evaluate(
            model, method.label, method.setting_hash, method.time_steps, context, config, loader, reporter, wall_s
        )
    except UserError as mistake:
        watch.fail(str(mistake), user_error=True)  # under torchrun: every process stops with the line
        raise  # the user's to fix: stop the suite with one line
    except (TrainingDiverged, BrokenContract) as failure:
        # Every process meets these at the same step (`distributed.all_finite`, identical replicas):
        # each returns the failure, the main process records it, and the suite goes on.
        reporter.warn(f"[red]{method.label} failed: {failure}[/red]")
        return _failed(failure, started)
    except (MemoryError, torch.OutOfMemoryError) as failure:
        message = f"out of memory ({type(failure).__name__}): lower data.batch_size or eval.memory_budget_mb"
    except Exception as failure:  # noqa: BLE001 (one method's bug must not end the suite: it is recorded)
        message = f"{type(failure).__name__}: {failure} (a bug in the method; its record keeps the message)"
    reporter.warn(f"[red]{method.label} failed: {message}[/red]")
    # Under torchrun this may be one process only, while the others wait in a collective: it is
    # recorded once and every process stops. Alone, the suite goes on.
    watch.fail(message)
    return _failed(message, started)


def _failed(failure, started: float) -> list[dict[str, Any]]:
    """The one record of a setting that failed, with its message."""
    return [
        {"status": "failed", "error": str(failure), "time_steps": None, "build_wall_s": time.perf_counter() - started}
    ]


# Runs of characters a label cannot keep in a file name (each becomes `_`).
SAFE_NAME = re.compile(r"[^\w.-]+")


def _evaluate(
    model,
    label: str,
    setting_hash: str,
    time_steps: list[int],
    context: RunContext,
    config: RunConfig,
    loader,
    reporter,
    build_wall_s,
) -> list[dict[str, Any]]:
    """The records of one row; a stopped simulation resumes from its partial curve in the cache."""
    evaluation = evaluate(
        model,
        loader("test"),
        time_steps,
        context.device,
        chunk_size=config.eval.chunk_size,
        memory_budget_mb=config.eval.memory_budget_mb,
        num_classes=context.dataset.info.num_classes,
        count_operations=config.eval.count_operations,
        reporter=reporter,
        description=f"simulate {label}",
        partial_curve=context.cache_dir / "curves" / f"{SAFE_NAME.sub('_', label)}-{setting_hash}.pt",
    )
    return [_evaluation_record(evaluation, t, build_wall_s, config) for t in evaluation.time_steps]


def _ceiling_record(base: dict[str, Any]) -> dict[str, Any]:
    """What the row of a method's own ANN changes in the method's base record."""
    return {
        "label": f"{base['label']}-ann",
        "family": "reference",
        "setting_hash": f"{base['setting_hash']}-ann",
        "reference_key": f"{base['reference_key']}-ann",
        "time_steps_train": 0,
    }


def _evaluation_record(
    evaluation: Evaluation, time_steps: int, build_wall_s: float, config: RunConfig
) -> dict[str, Any]:
    record = {
        "status": "ok",
        "time_steps": time_steps,
        "top1": evaluation.top1[time_steps],
        "top5": evaluation.top5[time_steps] if evaluation.top5 else None,
        # Which test images were right at this T (`bench.stats.unpack_bits(bits, test_size)`).
        "correct_bits": pack_bits(evaluation.correct[time_steps]) if evaluation.correct else None,
        "spikes_per_neuron": evaluation.spikes_per_neuron.get(time_steps, 0.0),
        "firing_rates": evaluation.firing_rates.get(time_steps, {}),
        "neurons_per_sample": evaluation.neurons_per_sample,
        "eval_wall_s": evaluation.wall_s,
        "build_wall_s": build_wall_s,
        "chunk_size": evaluation.chunk_size,
    }
    if config.eval.count_operations:
        sops, macs, dense = evaluation.sops[time_steps], evaluation.macs[time_steps], evaluation.dense_macs_per_sample
        record.update(
            sops_per_sample=sops,
            macs_per_sample=macs,
            ann_macs_per_sample=dense,
            energy_uj=energy_microjoules(macs, sops, config.eval.pj_per_mac, config.eval.pj_per_ac),
            ann_energy_uj=energy_microjoules(dense, 0.0, config.eval.pj_per_mac, config.eval.pj_per_ac),
            pj_per_mac=config.eval.pj_per_mac,
            pj_per_ac=config.eval.pj_per_ac,
        )
    return record


def _base_record(
    method: PlannedMethod, context: RunContext, config: RunConfig, dataset: DatasetSplits, provenance: Provenance
) -> dict[str, Any]:
    notes = context.notes
    return {
        "dataset": config.data.name,
        "num_classes": dataset.info.num_classes,
        "image_size": dataset.info.image_size,
        "train_size": len(dataset.train),
        "test_size": len(dataset.test),
        "method": method.entry.name,
        "label": method.label,
        "family": method.entry.family,
        "paper": method.entry.paper,
        "setting": method.setting,
        "options": dataclasses.asdict(method.options),
        "setting_hash": method.setting_hash,
        "reference_key": method.reference_key,
        # A method that builds a network of its own (a plugin's) names it in its notes.
        "architecture": notes.get("architecture", config.model.name),
        "model_options": f"width={config.model.width}, pooling={config.model.pooling}",
        "epochs": notes.get("epochs"),
        "time_steps_train": notes.get("time_steps_train"),
        "train_wall_s": notes.get("train_wall_s"),
        "notes": {
            key: value
            for key, value in notes.items()
            if key not in ("epochs", "time_steps_train", "train_wall_s", "architecture")
        },
        "compile_neurons": config.compile_neurons,
        "deterministic": config.deterministic,
        "world_size": distributed.world_size(),
        **dataclasses.asdict(provenance),
    }
