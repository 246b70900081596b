"""SAM2 and SAM models by name, at any input size, with exact loading of official checkpoints.

Public API (import from the submodules; importing this package loads no torch):
    registry.build_model(name, image_size) -> SegmentAnything      random weights
    registry.list_models(), registry.get_spec(name)
    segment_anything.SegmentAnything / ImageFeatures / DecoderOutput
    loading.load_model(name, weights, image_size), loading.load_weights(model, path)
    checkpoint.save_checkpoint(...), checkpoint.load_checkpoint(dir)
"""
