"""The training objective: CLMLF's forward pass and its loss, L = CE + w_l * LBCL + w_d * DBCL."""

from __future__ import annotations

from torch import Tensor, nn

from clmlf.training.config import TrainConfig


class TrainingObjective(nn.Module):
    """CLMLF + its training loss in one ``forward`` (so DDP sees every parameter use)."""

    def __init__(self, model: nn.Module, config: TrainConfig, log_prior: Tensor | None = None):
        super().__init__()
        self.model = model
        self.cfg = config
        self.log_prior = log_prior  # training label prior, for logit adjustment

    def forward(self, batch: dict) -> dict[str, Tensor]:
        from clmlf.model.losses import dbcl_loss, lbcl_loss, logit_adjusted_cross_entropy

        cfg = self.cfg
        labels = batch["labels"]
        out = self.model(**batch["original"])
        ce = logit_adjusted_cross_entropy(out.logits, labels, self.log_prior, cfg.logit_adjustment)
        parts = {"ce": ce}
        loss = ce
        if cfg.lbcl or cfg.dbcl:
            z = self.model.proj_original(out.fused)
            if cfg.lbcl:
                parts["lbcl"] = lbcl_loss(z, labels, cfg.temperature, cfg.lbcl_form)
                loss = loss + cfg.lbcl_weight * parts["lbcl"]
            if cfg.dbcl:
                aug = self.model(**batch["augmented"])
                parts["dbcl"] = dbcl_loss(z, self.model.proj_augmented(aug.fused), cfg.temperature, cfg.dbcl_form)
                loss = loss + cfg.dbcl_weight * parts["dbcl"]
        parts["loss"] = loss
        parts["correct"] = (out.logits.argmax(dim=-1) == labels).sum()
        return parts
