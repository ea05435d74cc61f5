"""What a checkpoint does with the probe's faces (``clmlf probe attention`` / ``clmlf probe disagree``).

* :func:`face_attention_share`: for every post of a split, the attention of its
  text tokens (last fusion layer, as ``clmlf visualize attention`` draws it) over
  the image patches, renormalised over the patches exactly like the figure
  (:func:`clmlf.evaluation.visualize.attention_grid`), and the share of it on the patches
  that overlap the face (``probe_faces.json`` box mapped through resize + center
  crop). A model that ignores where the face is puts ``k / 49`` there when the
  face covers ``k`` of the 49 patches: that is the uniform share it is compared to.
  The attention pooling's weights get the same treatment (its share on the face
  patches among the patch tokens), since the classifier reads R, not the tokens.
* :func:`glyph_accuracy`: accuracy per face glyph of a split, and what each glyph is
  mistaken for (which faces the frozen features cannot tell apart).
* :func:`disagreement_table`: the split's pictures with their text replaced by a
  sentence of clear sentiment (:data:`SENTIMENT_TEXTS`); per (text class, face
  class) pair, how often the prediction follows the face, the text, or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clmlf.data.probe import LABELS, face_patches, read_faces

SENTIMENT_TEXTS: dict[int, tuple[str, ...]] = {
    0: ("what a wonderful day, I love it", "so happy right now", "best news ever, amazing",
        "great time with great friends", "this made me smile, fantastic", "love this so much, awesome"),
    2: ("this is awful, I hate it", "worst day ever, so sad", "terrible news, I am furious",
        "so disappointed and angry", "this is horrible and depressing", "what a disaster, I hate this"),
}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _face_samples(data_root: str | Path, split: str) -> tuple[dict[str, dict], list]:
    """The probe's face records and the split's posts that have an image and a face record."""
    from clmlf.data.datasets import load_split

    faces = read_faces(data_root)
    samples = [s for s in load_split(data_root, "probe", split).samples if s.image_path is not None and s.id in faces]
    if not samples:
        raise ValueError(f"probe/{split}: no post with an image and a face record")
    return faces, samples


def _model_inputs(loaded, samples, texts: Sequence[str], device: torch.device):
    from clmlf.data.datasets import load_image

    pre = loaded.preprocessor
    images = []
    for sample in samples:
        picture = load_image(sample.image_path)
        images.append(None if picture is None else pre.image_tensor(picture))
    batch = pre.collate(list(texts), images)
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def face_attention_share(loaded, data_root: str | Path, split: str = "dev", *, batch_size: int = 32,
                         device: torch.device | None = None) -> dict:
    """Mean share of text-token -> patch attention on the face patches vs the uniform share ``k / 49``."""
    device = device or torch.device("cpu")
    faces, samples = _face_samples(data_root, split)
    model = loaded.model.to(device).eval()
    special = set(loaded.preprocessor.tokenizer.all_special_ids)
    first_head, all_heads, uniform, image_mass, first_token = [], [], [], [], []
    per_layer: list[list[float]] = []
    pooling_face, pooling_image = [], []
    captured: list = []
    hook = model.pooling.register_forward_hook(lambda m, inputs, output: captured.append(inputs)) \
        if model.pooling is not None else None
    for rows in _batches(len(samples), batch_size):
        chunk = [samples[i] for i in rows]
        inputs = _model_inputs(loaded, chunk, [s.text for s in chunk], device)
        captured.clear()
        out = model(**inputs, return_attentions=True)
        pool = _pooling_weights(model, captured)  # [B, L] or None
        layers = [a.float().cpu() for a in out.attentions]  # per fusion layer [B, heads, L, L]
        weights = layers[-1]
        n_text = out.num_text_tokens
        n_patches = weights.shape[-1] - n_text - 1
        side = int(round(n_patches ** 0.5))
        for b, sample in enumerate(chunk):
            ids = inputs["input_ids"][b].tolist()
            mask = inputs["attention_mask"][b].tolist()
            tokens = [i for i in range(n_text) if mask[i] and ids[i] not in special]
            if not tokens:
                continue
            face = torch.from_numpy(face_patches(faces[sample.id], loaded.config.resize, loaded.config.image_size,
                                                 side).reshape(-1))
            image_mass.append(float(weights[b][:, tokens, n_text:].sum(-1).mean()))
            shares = [_face_share(layer[b], tokens, n_text, face) for layer in layers]  # each [heads, tokens]
            first_head.append(float(shares[-1][0].mean()))
            all_heads.append(float(shares[-1].mean()))
            per_layer.append([float(x.mean()) for x in shares])
            first_token.append(float(_face_share(weights[b], [0], n_text, face).mean()))
            uniform.append(float(face.sum()) / n_patches)
            if pool is not None:
                patch_pool = pool[b, n_text + 1 :]
                pooling_image.append(float(pool[b, n_text:].sum()))
                pooling_face.append(float(patch_pool[face].sum() / patch_pool.sum().clamp_min(1e-12)))
    if hook is not None:
        hook.remove()
    first_a, all_a, uni_a = (np.asarray(v) for v in (first_head, all_heads, uniform))
    return {
        "split": split, "posts": len(uni_a), "patches": side * side,
        "uniform_share": float(uni_a.mean()),
        "face_share_first_head": float(first_a.mean()),
        "face_share_all_heads": float(all_a.mean()),
        "ratio_first_head": float(first_a.mean() / uni_a.mean()),
        "ratio_all_heads": float(all_a.mean() / uni_a.mean()),
        "median_per_post_ratio_all_heads": float(np.median(all_a / uni_a)),
        "text_attention_on_image": float(np.mean(image_mass)),
        # The first text token ([CLS]) is what "cls" pooling classifies; the text-token figures above skip it.
        "ratio_first_token": float(np.mean(first_token) / uni_a.mean()),
        "ratio_all_heads_per_layer": [float(v) for v in np.asarray(per_layer).mean(0) / uni_a.mean()],
        "pooling_share_on_image": float(np.mean(pooling_image)) if pooling_image else None,
        "pooling_face_share": float(np.mean(pooling_face)) if pooling_face else None,
        "pooling_ratio": float(np.mean(pooling_face) / uni_a.mean()) if pooling_face else None,
    }


def _pooling_weights(model, captured: list) -> torch.Tensor | None:
    """The attention-pooling weights [B, L] of the forward pass whose pooling inputs were captured."""
    if not captured:
        return None
    tokens, keep = captured[-1]
    scores = model.pooling.score(tokens).squeeze(-1).masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1).float().cpu()


def _face_share(weights: torch.Tensor, tokens: list[int], n_text: int, face: torch.Tensor) -> torch.Tensor:
    """[heads, tokens]: share of each text token's patch attention (renormalised over patches) on the face."""
    patches = weights[:, tokens, n_text + 1 :]  # skip the global image token, as the figure does
    grids = patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)  # as attention_grid renormalises
    return grids[..., face].sum(-1)


@torch.no_grad()
def disagreement_table(loaded, data_root: str | Path, split: str = "dev", *, batch_size: int = 32,
                       device: torch.device | None = None) -> list[dict]:
    """Per (text class, face class): n, and the shares of predictions that follow the face / the text / neither."""
    from clmlf.data.datasets import load_split

    device = device or torch.device("cpu")
    data = load_split(data_root, "probe", split)
    samples = [s for s in data.samples if s.image_path is not None]
    model = loaded.model.to(device).eval()
    cache = None
    if not any(p.requires_grad for p in model.image_encoder.parameters()):  # every picture is seen once per text
        from clmlf.data.image_cache import ImageFeatureCache

        cache = ImageFeatureCache(max_entries=len(samples))
        cache.install(model.image_encoder)
    counts: dict[tuple[int, int], list[int]] = {}
    for text_label, sentences in SENTIMENT_TEXTS.items():
        for rows in _batches(len(samples), batch_size):
            chunk = [samples[i] for i in rows]
            texts = [sentences[i % len(sentences)] for i in rows]
            predicted = model(**_model_inputs(loaded, chunk, texts, device)).logits.argmax(-1).tolist()
            for sample, guess in zip(chunk, predicted, strict=True):
                row = counts.setdefault((text_label, sample.label), [0, 0, 0, 0])  # n, face, text, neither
                row[0] += 1
                if guess == sample.label:
                    row[1] += 1
                if guess == text_label:
                    row[2] += 1
                if guess not in (sample.label, text_label):
                    row[3] += 1
    if cache is not None:
        cache.uninstall()
    table = []
    for (text_label, face_label), (n, face, text, neither) in sorted(counts.items()):
        table.append({"text": LABELS[text_label], "face": LABELS[face_label], "agree": text_label == face_label,
                      "n": n, "follows_face": face / n, "follows_text": text / n, "neither": neither / n})
    return table


@torch.no_grad()
def glyph_accuracy(loaded, data_root: str | Path, split: str = "dev", *, batch_size: int = 32,
                   device: torch.device | None = None) -> list[dict]:
    """Per glyph of the split (worst first): its class, n, accuracy and how often each class was predicted."""
    device = device or torch.device("cpu")
    faces, samples = _face_samples(data_root, split)
    model = loaded.model.to(device).eval()
    counts: dict[str, list[int]] = {}
    for rows in _batches(len(samples), batch_size):
        chunk = [samples[i] for i in rows]
        predicted = model(**_model_inputs(loaded, chunk, [s.text for s in chunk], device)).logits.argmax(-1).tolist()
        for sample, guess in zip(chunk, predicted, strict=True):
            counts.setdefault(faces[sample.id]["glyph"], [0] * len(LABELS))[guess] += 1
    glyph_label = {face["glyph"]: face["label"] for face in faces.values()}
    table = []
    for glyph, predicted in counts.items():
        n, label = sum(predicted), glyph_label[glyph]
        table.append({"glyph": glyph, "codepoint": f"U+{ord(glyph):04X}", "label": LABELS[label], "n": n,
                      "accuracy": predicted[label] / n,
                      "predicted": {LABELS[k]: v / n for k, v in enumerate(predicted)}})
    return sorted(table, key=lambda row: (row["accuracy"], row["codepoint"]))


def format_glyphs(table: list[dict], name: str) -> str:
    lines = [f"{name}: accuracy per face glyph (worst first)",
             "| glyph | codepoint | class | n | accuracy | read as " + " / ".join(LABELS) + " |",
             "|---|---|---|---:|---:|---|"]
    for row in table:
        shares = " / ".join(f"{row['predicted'][label]:.2f}" for label in LABELS)
        lines.append(f"| {row['glyph']} | {row['codepoint']} | {row['label']} | {row['n']} | {row['accuracy']:.2f} | "
                     f"{shares} |")
    return "\n".join(lines)


def format_attention(result: dict, name: str) -> str:
    return (
        f"{name} on probe/{result['split']} ({result['posts']} posts, {result['patches']} patches)\n"
        f"uniform share (face patches / all patches): {result['uniform_share']:.4f}\n"
        f"face share, first head of the last fusion layer: {result['face_share_first_head']:.4f} "
        f"({result['ratio_first_head']:.2f}x uniform)\n"
        f"face share, mean over heads: {result['face_share_all_heads']:.4f} ({result['ratio_all_heads']:.2f}x uniform; "
        f"median per post {result['median_per_post_ratio_all_heads']:.2f}x)\n"
        f"text tokens' attention mass on image tokens (before renormalising): {result['text_attention_on_image']:.4f}\n"
        f"mean over heads per fusion layer (first to last): "
        f"{', '.join(f'{r:.2f}x' for r in result['ratio_all_heads_per_layer'])}\n"
        f"first text token ([CLS], what cls pooling classifies), mean over heads: {result['ratio_first_token']:.2f}x uniform"
        + ("" if result["pooling_face_share"] is None else
           f"\nattention pooling: {result['pooling_share_on_image']:.4f} of its mass on image tokens; of the patch "
           f"part, {result['pooling_face_share']:.4f} on the face ({result['pooling_ratio']:.2f}x uniform)")
    )


def format_disagreement(table: list[dict], name: str) -> str:
    lines = [f"{name}: text sentence vs face class",
             "| text | face | n | follows face | follows text | neither |", "|---|---|---|---|---|---|"]
    for row in table:
        both = " (agree)" if row["agree"] else ""
        lines.append(f"| {row['text']} | {row['face']}{both} | {row['n']} | {row['follows_face']:.2f} | "
                     f"{row['follows_text']:.2f} | {row['neither']:.2f} |")
    return "\n".join(lines)
