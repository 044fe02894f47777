"""Inference: descriptor extraction, faiss search, submission files."""
