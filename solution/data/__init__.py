"""Data: GLDv2 CSVs and paths, robust image loading, the toy generator, datasets."""
