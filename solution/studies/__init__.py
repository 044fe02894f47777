"""Studies: commands that measure the pipeline (they use it; the pipeline never imports them)."""
