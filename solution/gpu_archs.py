"""Which GPU a build runs on: a faiss GPU build with machine code for some architectures and no PTX, and a
torch build by its ``get_arch_list()``. Standard library only and importing nothing: the search asks it, and
``make kernel`` inlines it into the shipped ``entry.py``, which must run before anything is installed.
"""

# faiss-gpu-cu12 1.14's library holds machine code for sm_70 and sm_80 and no PTX: a GPU runs it only when
# its major version matches and its minor is at least the built one (7.5 runs sm_70 code, 8.9 runs sm_80).
# P100 (6.0), H100/H200 (9.0) and Blackwell cards (12.0) do not; exact search runs through torch there.
FAISS_GPU_ARCHS = ("7.0", "8.0")


def faiss_gpu_serves(capability: float, archs=FAISS_GPU_ARCHS) -> bool:
    """Whether a faiss GPU build with machine code for ``archs`` (and no PTX) runs on a GPU of ``capability``."""
    major, minor = divmod(round(float(capability) * 10), 10)
    for arch in archs:
        arch_major, arch_minor = (int(part) for part in str(arch).split("."))
        if major == arch_major and minor >= arch_minor:
            return True
    return False


def torch_serves(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for ``arch_list`` (``torch.cuda.get_arch_list()``: ``sm_75``,
    ``compute_90``...) runs on a GPU of ``capability``: machine code of the same major version and a minor no
    higher (sm_80 runs on 8.6), or PTX of an architecture no newer, which the driver compiles."""
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit() or len(number) < 2:
            continue
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False
