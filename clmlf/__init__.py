"""CLMLF: contrastive learning + multi-layer fusion for text+image sentiment (model, losses, data, training)."""
