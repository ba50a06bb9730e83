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

from bench.cli import build_parser, config_from_args
from bench.errors import UserError, exit_status
from bench.progress import Reporter
from bench.runner import build_row


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The run's options (config, dataset, --set, --plugin, ...) that say which run made the rows."""
    parser = build_parser()
    parser.prog, parser.description = prog, description
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
