"""Few-shot, prompt-free segmentation: support-set prototypes as mask-decoder prompts."""
