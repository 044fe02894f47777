"""The offline Kaggle kernel: folders to push (``build``) and what the kernel runs (``run``)."""
