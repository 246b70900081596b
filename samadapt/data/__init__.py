"""Reading medical images, volumes and masks; dataset descriptions, checks, splits, preprocessing,
augmentation, and the synthetic phantoms that serve as the embedded default data."""
