"""Export: the curated dataset (leakage-free splits) and its dataset card."""
