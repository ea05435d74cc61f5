"""CLMLF: contrastive learning + multi-layer fusion for text+image sentiment (model, losses, data, training)."""


def __getattr__(name: str):  # lazy, so `import clmlf` stays light: clmlf.load -> clmlf.model.checkpoint.load
    if name == "load":
        from clmlf.model.checkpoint import load

        return load
    raise AttributeError(f"module 'clmlf' has no attribute {name!r}")
