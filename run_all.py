"""Run every configured method on one dataset and write its leaderboard: `python run_all.py --help`."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
