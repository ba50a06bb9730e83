"""Shared test setup."""

import os

# The entry points under test tune the process's memory allocator (`bench.allocator`), a setting
# that no test could undo; tests/test_allocator.py checks it in processes of its own.
os.environ["SPIKEBENCH_KEEP_MEMORY"] = "0"
