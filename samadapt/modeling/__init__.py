"""Every network of samadapt, and the loading of their weights (importing this package loads no torch).

Segment Anything and its weights:
    registry.build_model(name, image_size) -> SegmentAnything      random weights
    registry.list_models(), registry.get_spec(name)
    segment_anything.SegmentAnything / ImageFeatures / DecoderOutput
    loading.load_model(name, weights, image_size), loading.load_weights(model, path)
    loading.load_model_folder(dir), model_folder.save_model_folder(model, dir, ...)
    weight_files, meta_sam, meta_sam2, key_mapping    file formats and Meta's key names
    sources                                           the `--init` grammar: where weights come from
    fast/                                             the fast inference path of SAM2's image encoder
What each stage puts around it:
    class_prompts.ClassPromptSegmenter     fine-tuning: learned prompt tokens per class
    unet_baselines.ConvBaseline            fine-tuning baselines: MONAI U-Net / Attention U-Net
    prototypes, fewshot_segmenter          few-shot: support prototypes as prompts, mask decoder
    mae.MaskedAutoencoder, masking, sparse_hiera
                                           pre-training: MAE decoder over the (sparse) Hiera trunk
"""
