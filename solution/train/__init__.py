"""Training: triplet loss over (query, positive, negatives) tuples, negatives mined each epoch."""
