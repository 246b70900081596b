"""Shared machinery: atomic outputs, checkpoints, training loop, distributed set-up, logging."""
