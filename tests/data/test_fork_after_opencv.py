"""A DataLoader forked after the parent ran OpenCV warps must not deadlock (it did: a real training run hung
in its first validation after the rotation augmentation drew the augmented-batch picture in the parent)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    import albumentations as A
    from torch.utils.data import DataLoader
    from solution.data.datasets import worker_init

    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    warp = A.Affine(rotate=(-30, 30), p=1.0)
    for _ in range(5):
        warp(image=image)  # the parent's OpenCV warps, as the augmented-batch picture does

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 8
        def __getitem__(self, i):
            return torch.tensor(warp(image=image[:256, :256])["image"].mean())

    loader = DataLoader(Items(), batch_size=2, num_workers=2, worker_init_fn=worker_init)
    print(sum(1 for _ in loader))
""")


def test_workers_forked_after_opencv_in_the_parent_finish():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "4"
