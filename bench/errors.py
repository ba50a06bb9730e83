"""The one exception type for mistakes a user can make.

Bad config values, unknown names, missing or corrupt data: raise `UserError` with a message that
says what is wrong and how to fix it. The command line catches it once, prints the message as one
line and exits with status 2. Anything else is a bug and keeps its traceback.
"""

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A mistake in the user's input, reported as one line and exit status 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are `UserError`s (argparse would print its usage too)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see --help)")


def exit_status(command: Callable[[], int | None]) -> int:
    """Run a command-line entry point: a `UserError` becomes one line on stderr and status 2."""
    try:
        return command() or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume", file=sys.stderr)
        return 130
