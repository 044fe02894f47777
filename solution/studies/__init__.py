"""Studies: commands that measure the pipeline (they use it; the pipeline never imports them). Importing
``solution.studies.tables`` registers every result kind's table with ``solution.results``."""
