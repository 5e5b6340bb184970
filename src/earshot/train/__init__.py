"""Training: contrastive losses on joint embeddings and audio augmentation."""
