"""Models: a timm backbone tapped at several layers, a pooling head from a registry, L2 output."""

from .net import RetrievalNet, build_net, load_checkpoint, save_checkpoint

__all__ = ["RetrievalNet", "build_net", "load_checkpoint", "save_checkpoint"]
