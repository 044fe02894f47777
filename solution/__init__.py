"""REMAP landmark retrieval: data, training, extraction, search and Kaggle submission."""

__version__ = "0.1.0"
