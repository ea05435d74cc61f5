"""Training and probe data: datasets in the release layout, batches, augmentation, label-free photos, encoder caches."""
