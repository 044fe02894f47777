import subprocess
import sys
import textwrap

import pytest

# Activations as a forward makes them (400 MB in four blocks, allocated, then freed), eight times over: how many
# pages the kernel faulted in on the last round, once malloc's heap has grown to the working set (it takes a few).
REFAULTS = textwrap.dedent("""
    import resource, sys
    import torch
    from solution.runtime import keep_freed_memory
    took = keep_freed_memory({"REMAP_KEEP_FREED_MEMORY": sys.argv[1]})
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(n) for n in (10_000_000, 40_000_000, 20_000_000, 30_000_000)]
        del blocks
    print(int(took), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_activations_stay_in_the_heap_instead_of_being_faulted_in_again():
    def refaults(setting: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", REFAULTS, setting], capture_output=True, text=True, check=True)
        took, faults = out.stdout.split()
        return int(took), int(faults)

    kept, default = refaults("1"), refaults("0")
    assert kept[0] == 1 and default[0] == 0  # the opt-out leaves glibc as it is
    assert default[1] > 90_000  # 400 MB in 4 KiB pages, mapped afresh every round
    assert kept[1] < 1_000


def test_keeping_freed_memory_is_refused_where_there_is_no_glibc(monkeypatch):
    from solution.runtime import keep_freed_memory

    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory({}) is False
