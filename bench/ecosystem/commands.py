"""`spikebench export` and `spikebench neurobench`: a row's model, read again from the cache of the
run that made it (the same config and overrides), leaves the suite as a NIR file or is measured
by NeuroBench's own code.

    spikebench export ROW --format nir [--config C] [--set KEY=VALUE ...] [--out FILE]
    spikebench neurobench [--config C] [--methods ROWS] [--time-steps T]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.cli import config_from_args
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.progress import Reporter
from bench.records import Provenance, dataset_slug
from bench.runner import build_row


def _parser(prog: str, description: str, rows: bool = False) -> argparse.ArgumentParser:
    """The options of `spikebench run` that say which run made the rows (config, dataset, device,
    epochs, --set, --plugin; with `rows`, --methods and --results-dir too)."""
    parser = OneLineArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="the run's YAML config, a path or a shipped config's name (default: default)")
    parser.add_argument("--dataset", help="the run's dataset (data.name)")
    parser.add_argument("--data-root", help="folder that holds the dataset")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--epochs", type=int, help="the run's training epochs (train.epochs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as in the run")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="as in the run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if rows:
        parser.add_argument("--methods", help="the rows to measure, comma-separated names or labels (default: all)")
        parser.add_argument("--results-dir", help="where the report goes: RESULTS_DIR/DATASET/ (default: runs)")
    parser.set_defaults(results_dir=None, reference_dir=None, seeds=None, methods=None)
    return parser


def export_main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _export(argv))


def _export(argv: list[str] | None) -> int:
    parser = _parser("spikebench export", "Write a row's spiking network as a NIR graph and check it is exact.")
    parser.add_argument("row", help="the row's label, as in the leaderboard (e.g. conversion)")
    parser.add_argument("--format", default="nir", choices=["nir"], help="the file format (nir)")
    parser.add_argument("--out", help="the file to write (default: runs/export/ROW.nir)")
    parser.add_argument("--check-steps", type=int, default=32, help="time steps of the exactness check (32)")
    parser.add_argument("--check-images", type=int, default=8, help="test images of the exactness check (8)")
    args = parser.parse_args(argv)
    if args.check_steps < 1 or args.check_images < 1:
        raise UserError("--check-steps and --check-images must be at least 1")
    from bench.ecosystem.nir import _nir, check_nir, export_nir

    nir = _nir()
    config = config_from_args(args)
    with Reporter(enabled=not args.quiet) as reporter:
        model, _, loader = build_row(config, args.row, reporter)
    images = _test_images(loader, args.check_images)
    graph = export_nir(model.cpu(), images)
    out = Path(args.out or Path("runs") / "export" / f"{args.row}.nir")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        nir.write(out, graph)
    except OSError as error:
        raise UserError(f"cannot write {out} ({error.strerror or error}); choose another --out") from None
    verdict = check_nir(model, nir.read(out), images, args.check_steps)
    print(f"{args.row}: wrote {out} ({len(graph.nodes)} NIR nodes, {len(graph.edges)} edges)")
    print(f"{args.row}: {verdict} (T = {args.check_steps}, {len(images)} test images, NIR semantics at dt = 1)")
    return 0


def _test_images(loader, count: int) -> torch.Tensor:
    images = next(iter(loader("test", batch_size=count)))[0]
    return images[:count].cpu()


def neurobench_main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _neurobench(argv))


def _neurobench(argv: list[str] | None) -> int:
    parser = _parser(
        "spikebench neurobench", "NeuroBench's own metrics for each row of a run, beside the suite's.", rows=True
    )
    parser.add_argument("--time-steps", type=int, default=32, help="T of the comparison (32, the efficiency table's)")
    parser.add_argument("--images", type=int, default=16, help="test images measured (16)")
    parser.add_argument("--out", help="the Markdown report (default: RESULTS_DIR/DATASET/neurobench.md)")
    args = parser.parse_args(argv)
    if args.time_steps < 1 or args.images < 1:
        raise UserError("--time-steps and --images must be at least 1")
    from bench.ecosystem.neurobench import compare

    config = config_from_args(args)
    results = []
    with Reporter(enabled=not args.quiet) as reporter:
        for spec in config.methods:
            model, dataset, loader = build_row(config, spec.display_name, reporter)
            images, labels = next(iter(loader("test", batch_size=args.images)))
            device = next(iter(model.parameters()), torch.empty(0)).device
            reporter.log(
                f"{spec.display_name}: NeuroBench and spikebench on {len(images)} images at T = {args.time_steps}"
            )
            results.append((spec.display_name, compare(model, images.to(device), labels.to(device), args.time_steps)))
    provenance = Provenance.capture(config.section_hash("data", "model", "train", "eval"), config.seed, device)
    text = neurobench_report(results, config, len(images), args.time_steps, provenance)
    out = Path(args.out or Path(config.results_dir) / dataset_slug(config.data.name) / "neurobench.md")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as error:
        raise UserError(f"cannot write {out} ({error.strerror or error}); choose another --out") from None
    print(text)
    print(f"written to {out}")
    return 0


def neurobench_report(results, config, images: int, time_steps: int, provenance: Provenance) -> str:
    """The comparison as Markdown: one row per method, then each row's differences."""
    from importlib.metadata import version

    header = (
        "| row | spikebench SOPs (M) | spikebench MACs (M) | total (M) | NeuroBench ACs (M) | NeuroBench MACs (M) "
        "| total (M) | totals equal | NeuroBench dense (M) | activation sparsity (ours / NeuroBench) |"
    )
    lines = [
        f"# NeuroBench's metrics beside spikebench's: {config.data.name}, {config.model.name}",
        "",
        f"Per test image, summed over T = {time_steps} steps and every layer, on the first {images} test images; "
        f"NeuroBench {version('neurobench')} (`SynapticOperations`, `ActivationSparsity`) run on each row's model "
        "with the constant-input prefix off (every layer called at every step) and the same random draws as the "
        "suite's run. Conventions: spikebench counts SOPs for a layer fed events (spikes, pooled spikes, Poisson "
        "input; events times the synapses each reaches, zero weights included) and dense MACs for a layer fed "
        "analog values (padded border included); NeuroBench counts ACs when a layer's input lies in {-1, 0, 1}, "
        "MACs otherwise, and only non-zero input times non-zero weight products. Produced by "
        "`spikebench neurobench`. An ANN runs once per image in both; NeuroBench counts its ReLUs as "
        "activations, the suite has no spiking layer there (-).",
        "",
        header,
        "|" + "---|" * 10,
    ]
    for label, c in results:
        ours, theirs = c.sops + c.macs, c.neurobench_acs + c.neurobench_macs
        lines.append(
            f"| {label} | {c.sops / 1e6:.3f} | {c.macs / 1e6:.3f} | {ours / 1e6:.3f} | {c.neurobench_acs / 1e6:.3f} "
            f"| {c.neurobench_macs / 1e6:.3f} | {theirs / 1e6:.3f} | {'yes' if c.totals_agree else 'no'} "
            f"| {c.neurobench_dense / 1e6:.3f} | {_sparsity(c.sparsity)} / {c.neurobench_sparsity:.4f} |"
        )
    lines += [
        "",
        f"Models rebuilt from the cache of the run of config hash {provenance.config_hash} (seed {config.seed}); "
        f"measured on {provenance.hardware}, commit {provenance.commit}, {provenance.timestamp}.",
        "",
        "Where the conventions differ, layer by layer:",
        "",
    ]
    for label, c in results:
        found = c.differences or ["none: every layer labelled and counted alike"]
        lines += [f"- **{label}**"] + [f"  - {difference}" for difference in found]
    return "\n".join(lines) + "\n"


def _sparsity(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
