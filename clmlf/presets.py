"""Published training recipes per dataset (REFERENCE.md sections 1-3 and Appendix B).

A preset is only a set of defaults: every value can be overridden on the
``clmlf train`` command line. The values are the paper's / release's: fusion-image
layer counts per dataset, batch sizes, 20 epochs with the text encoder's learning
rate at 0 followed by 30 epochs with everything but the image encoder at 2e-5,
temperature 0.07, both contrastive weights 1.0, fusion width 768.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    """Recipe defaults for one dataset."""

    dataset: str
    fusion_layers: int
    image_layers: int
    batch_size: int
    stage1_epochs: int = 20  # text encoder learning rate 0
    stage2_epochs: int = 30  # text encoder trained too
    lr: float = 2e-5
    text_lr: float = 2e-5  # used in stage 2 only
    weight_decay: float = 0.01  # torch.optim.AdamW default (REFERENCE.md names none)
    temperature: float = 0.07
    lbcl_weight: float = 1.0
    dbcl_weight: float = 1.0
    fusion_dim: int = 768
    max_text_len: int = 200
    aspect: bool = False
    selection_metric: str = "f1_weighted"

    @property
    def epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "mvsa-single": Preset("mvsa-single", fusion_layers=3, image_layers=2, batch_size=32),
    "mvsa-multiple": Preset("mvsa-multiple", fusion_layers=4, image_layers=2, batch_size=64),
    "hfm": Preset("hfm", fusion_layers=5, image_layers=1, batch_size=128, selection_metric="f1_macro"),
    # Appendix B reports accuracy / macro F1 for the aspect-based variant; the paper gives
    # no per-dataset layer counts there, so the MVSA-Single ones are used.
    "twitter15": Preset("twitter15", fusion_layers=3, image_layers=2, batch_size=32, aspect=True,
                        selection_metric="f1_macro"),
    "twitter17": Preset("twitter17", fusion_layers=3, image_layers=2, batch_size=32, aspect=True,
                        selection_metric="f1_macro"),
    # The image-sentiment probe (clmlf probe build): no published recipe; CPU-sized defaults,
    # text encoder frozen throughout (the text carries no label), accuracy picks the best epoch.
    "probe": Preset("probe", fusion_layers=2, image_layers=0, batch_size=32, stage1_epochs=5, stage2_epochs=0,
                    lr=1e-4, fusion_dim=256, max_text_len=64, selection_metric="accuracy"),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})") from None
