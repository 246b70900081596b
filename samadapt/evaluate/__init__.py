"""Metrics, evaluation reports, paired comparisons and baselines."""
