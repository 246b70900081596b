"""SAM2 and SAM models by name, at any input size, with exact loading of official checkpoints."""
