"""Masked-autoencoder (MAE) pre-training of the SAM2 image encoder on unlabeled images."""
