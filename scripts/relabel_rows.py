"""Give the records of one row of a store a new label, when a method's default changed under them.

    python scripts/relabel_rows.py STORE OLD NEW [--fill KEY=VALUE ...] [--drop KEY ...] [--config CONFIG]

A store is appended to and never rewritten by runs; this is the one exception, for a row whose
name now means another algorithm (a method's default made faithful to its paper: the rows run
with the old default are spikebench's variant, not the paper's method). It changes what the
records call the row and nothing they measured:

- `label` OLD becomes NEW (and a ceiling row `OLD-ann` becomes `NEW-ann`);
- `--fill KEY=VALUE` adds an option the method gained since, with the value that reproduces what
  ran (YAML values; the caller vouches for them, as the commit that runs this must say), and
  `--drop KEY` removes one it lost (whose value the new options express);
- `setting` is computed again from the options against the method's current defaults;
- with `--config`, the config's row NEW must plan exactly these options, and the records take its
  setting hash and reference key, so a run of that config counts the row as done.

The store is rewritten under its lock, through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import yaml

from bench.api import get_method
from bench.config import load_config
from bench.errors import UserError, exit_status
from bench.records import locked
from bench.runner import plan_methods


def setting_of(method: str, options: dict) -> str:
    """The setting string a run would write for these options (see `bench.runner.plan_methods`)."""
    entry = get_method(method)
    shown = {f.name for f in dataclasses.fields(entry.options) if f.metadata.get("show")}
    changed = {key: value for key, value in options.items() if entry.defaults.get(key) != value or key in shown}
    return ", ".join(f"{key}={value}" for key, value in sorted(changed.items()))


def relabel(store: Path, old: str, new: str, fill: dict, config: str | None, drop: tuple[str, ...] = ()) -> int:
    planned = None
    if config:
        matches = [m for m in plan_methods(load_config(config, [])) if m.label == new]
        if not matches:
            raise UserError(f"{config} has no row labelled {new!r}; add it first, with the options that ran")
        planned = matches[0]
    changed = 0
    with locked(store):
        lines = store.read_text().splitlines()
        out = []
        for line in lines:
            record = json.loads(line)
            if record.get("label") not in (old, f"{old}-ann"):
                out.append(line)  # untouched records stay byte for byte
                continue
            if record.get("label") == f"{old}-ann":
                record["label"] = f"{new}-ann"
                changed += 1
            elif record.get("label") == old:
                options = {key: value for key, value in record.get("options", {}).items() if key not in drop}
                options.update(fill)
                if planned is not None:
                    expected = dataclasses.asdict(planned.options)
                    if options != expected:
                        differ = sorted(k for k in set(options) | set(expected) if options.get(k) != expected.get(k))
                        raise UserError(f"{config} row {new!r} plans other options than the records ran: {differ}")
                    record.update(setting_hash=planned.setting_hash, reference_key=planned.reference_key)
                record.update(label=new, options=options, setting=setting_of(record["method"], options))
                changed += 1
            out.append(json.dumps(record, sort_keys=True))
        temporary = store.with_suffix(".relabel")
        temporary.write_text("\n".join(out) + "\n")
        os.replace(temporary, store)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--fill", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--drop", action="append", default=[], metavar="KEY")
    parser.add_argument("--config")
    args = parser.parse_args(argv)

    def run() -> int:
        if not args.store.is_file():
            raise UserError(f"no records at {args.store}")
        fill = {}
        for item in args.fill:
            key, _, value = item.partition("=")
            fill[key] = yaml.safe_load(value)
        count = relabel(args.store, args.old, args.new, fill, args.config, tuple(args.drop))
        print(f"{count} records of {args.old!r} are now {args.new!r} in {args.store}")
        return 0

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
