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
    # Training data: the preset's dataset, or several with the same labels (their train splits merged).
    datasets: tuple[str, ...] = ()
    holdout_fraction: float = 0.0  # > 0: select on this share of train, held out; dev splits only report
    translation_view: bool = False  # each post's back-translation is also a training sample
    oversample: tuple[tuple[str, int], ...] = ()  # (dataset, n): its training posts repeated n times per epoch
    text_train_layers: int | None = None  # stage 2 trains only the top N text-encoder layers (None: all)
    use_images: bool = True
    lbcl: bool = True
    dbcl: bool = True
    lbcl_form: str = "reference"
    dbcl_form: str = "reference"
    logit_adjustment: float = 0.0
    length_bucketing: bool = False
    lr_schedule: str = "constant"  # "linear": stage 2 warms up, then decays to 0 (the release has no schedule)
    fusion_dtype: str | None = None  # checkpoint storage of the fusion tensors (None: as trained, float32)
    prior_shift: bool = False  # fold a post-hoc logit adjustment chosen on the held-out slice into best/
    amp: bool = False
    pooling: str = "attention"  # what the classifier reads (ModelConfig.pooling): attention, mean, cls, text
    image_size: int = 224  # input picture side; the image encoder's grid is image_size / 32 patches a side

    @property
    def train_datasets(self) -> tuple[str, ...]:
        return self.datasets or (self.dataset,)

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
    # One fusion layer over local patch tokens (no image layer) and the classifier reading the text
    # tokens ("text" pooling): the label can only reach them through their attention on the picture,
    # which is what the probe measures (docs/results.md, "Image probe"). Pictures enter at 384 px (a 12 x 12
    # patch grid instead of 7 x 7): a face of 15-45% of the shorter side then spans 66-198 px (38-115 at 224),
    # which the frozen EfficientNet-Lite0 reads far better (docs/results.md, "Input size").
    "probe": Preset("probe", fusion_layers=1, image_layers=0, batch_size=32, stage1_epochs=8, stage2_epochs=0,
                    lr=3e-4, fusion_dim=256, max_text_len=64, selection_metric="accuracy", pooling="text",
                    image_size=384),
}


# The embedded default model (docs/model-card.md): one general 3-class model trained on every 3-class set we
# have, text encoder fine-tuned in stage 2, text only (no labelled images exist here), selected on 10% of
# train held out; the dev splits stay honest estimates. Values measured on that held-out slice
# (docs/results.md, "Default model").
PRESETS["default"] = Preset(
    "mvsa-single", fusion_layers=3, image_layers=2, batch_size=32, stage1_epochs=1,
    lr=1e-4, fusion_dim=256, max_text_len=128,
    datasets=("mvsa-single", "mvsa-multiple"), holdout_fraction=0.1, translation_view=True,
    text_train_layers=5, use_images=False, lbcl=False, dbcl=False, length_bucketing=True, amp=True,
    prior_shift=True, lr_schedule="linear", text_lr=5e-5, stage2_epochs=2, fusion_dtype="float16",
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})") from None
