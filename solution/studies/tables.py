"""Every result kind's table, registered with ``solution.results`` by importing the modules that draw them.
Imported where results are rendered (``make results``, the docs' tests), so running one study does not load
every other."""

from ..train import report
from . import ablation, ensemble, geometry, head_ablation, saturation, tuning

__all__ = ["ablation", "ensemble", "geometry", "head_ablation", "report", "saturation", "tuning"]
