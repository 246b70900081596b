"""Supervised fine-tuning for segmentation: task losses, learned class prompts, prompt simulation."""
