"""Studies: commands that measure the pipeline (they use it; the pipeline never imports them). Importing this
package registers every result kind's table with ``solution.results`` (``make results`` draws them)."""

from ..train import report
from . import ablation, ensemble, geometry, head_ablation, saturation, tuning

__all__ = ["ablation", "ensemble", "geometry", "head_ablation", "report", "saturation", "tuning"]
