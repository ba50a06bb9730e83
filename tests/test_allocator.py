"""Freed memory kept in the process: blocks reused in a loop stop page-faulting (glibc only)."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, torch
from bench.allocator import freed_memory_kept, keep_freed_memory
kept = keep_freed_memory()
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MiB, written once, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
rounds = [faults_of_one_block() for _ in range(20)]
print(kept, freed_memory_kept(), sum(rounds[-5:]))
"""

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")


def run_probe(**env) -> tuple[str, str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    kept, reported, faults = done.stdout.split()
    return kept, reported, int(faults)


@glibc_only
def test_blocks_reused_in_a_loop_stop_page_faulting():
    # The heap grows for the first few rounds (aligned blocks leave holes) and then serves every
    # round from memory it kept.
    kept, reported, faults = run_probe(SPIKEBENCH_KEEP_MEMORY="1")
    assert (kept, reported) == ("True", "True")
    assert faults < 500  # over the last 5 rounds; each 64 MiB block is 16,384 pages


@glibc_only
def test_the_environment_can_leave_the_allocator_alone():
    kept, reported, faults = run_probe(SPIKEBENCH_KEEP_MEMORY="0")
    assert (kept, reported) == ("False", "False")
    assert faults > 5 * 16_000  # the system allocator maps every block afresh: the test above can fail
