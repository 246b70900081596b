"""Baselines trained by other frameworks and scored in samadapt's harness (nnU-Net v2)."""
