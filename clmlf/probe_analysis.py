"""What a checkpoint does with the probe's faces (``clmlf probe attention`` / ``clmlf probe disagree``).

* :func:`face_attention_share`: for every post of a split, the attention of its
  text tokens (last fusion layer, as ``clmlf visualize attention`` draws it) over
  the image patches, renormalised over the patches exactly like the figure
  (:func:`clmlf.visualize.attention_grid`), and the share of it on the patches
  that overlap the face (``probe_faces.json`` box mapped through resize + center
  crop). A model that ignores where the face is puts ``k / 49`` there when the
  face covers ``k`` of the 49 patches: that is the uniform share it is compared to.
* :func:`disagreement_table`: the split's pictures with their text replaced by a
  sentence of clear sentiment (:data:`SENTIMENT_TEXTS`); per (text class, face
  class) pair, how often the prediction follows the face, the text, or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clmlf.probe import LABELS, face_patches, read_faces

SENTIMENT_TEXTS: dict[int, tuple[str, ...]] = {
    0: ("what a wonderful day, I love it", "so happy right now", "best news ever, amazing",
        "great time with great friends", "this made me smile, fantastic", "love this so much, awesome"),
    2: ("this is awful, I hate it", "worst day ever, so sad", "terrible news, I am furious",
        "so disappointed and angry", "this is horrible and depressing", "what a disaster, I hate this"),
}


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _model_inputs(loaded, samples, texts: Sequence[str], device: torch.device):
    from clmlf.data import load_image

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
    from clmlf.data import load_split

    device = device or torch.device("cpu")
    faces = read_faces(data_root)
    data = load_split(data_root, "probe", split)
    samples = [s for s in data.samples if s.image_path is not None and s.id in faces]
    if not samples:
        raise ValueError(f"probe/{split}: no post with an image and a face record")
    model = loaded.model.to(device).eval()
    special = set(loaded.preprocessor.tokenizer.all_special_ids)
    first_head, all_heads, uniform, image_mass = [], [], [], []
    for rows in _batches(len(samples), batch_size):
        chunk = [samples[i] for i in rows]
        inputs = _model_inputs(loaded, chunk, [s.text for s in chunk], device)
        out = model(**inputs, return_attentions=True)
        weights = out.attentions[-1].float().cpu()  # [B, heads, L, L]
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
            patches = weights[b][:, tokens, n_text + 1 :]  # [heads, tokens, patches]
            image_mass.append(float(weights[b][:, tokens, n_text:].sum(-1).mean()))
            grids = patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)  # as attention_grid renormalises
            on_face = grids[..., face].sum(-1)  # [heads, tokens]
            first_head.append(float(on_face[0].mean()))
            all_heads.append(float(on_face.mean()))
            uniform.append(float(face.sum()) / n_patches)
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
    }


@torch.no_grad()
def disagreement_table(loaded, data_root: str | Path, split: str = "dev", *, batch_size: int = 32,
                       device: torch.device | None = None) -> list[dict]:
    """Per (text class, face class): n, and the shares of predictions that follow the face / the text / neither."""
    from clmlf.data import load_split

    device = device or torch.device("cpu")
    data = load_split(data_root, "probe", split)
    samples = [s for s in data.samples if s.image_path is not None]
    model = loaded.model.to(device).eval()
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
    table = []
    for (text_label, face_label), (n, face, text, neither) in sorted(counts.items()):
        table.append({"text": LABELS[text_label], "face": LABELS[face_label], "agree": text_label == face_label,
                      "n": n, "follows_face": face / n, "follows_text": text / n, "neither": neither / n})
    return table


def format_attention(result: dict, name: str) -> str:
    return (
        f"{name} on probe/{result['split']} ({result['posts']} posts, {result['patches']} patches)\n"
        f"uniform share (face patches / all patches): {result['uniform_share']:.4f}\n"
        f"face share, first head of the last fusion layer: {result['face_share_first_head']:.4f} "
        f"({result['ratio_first_head']:.2f}x uniform)\n"
        f"face share, mean over heads: {result['face_share_all_heads']:.4f} ({result['ratio_all_heads']:.2f}x uniform; "
        f"median per post {result['median_per_post_ratio_all_heads']:.2f}x)\n"
        f"text tokens' attention mass on image tokens (before renormalising): {result['text_attention_on_image']:.4f}"
    )


def format_disagreement(table: list[dict], name: str) -> str:
    lines = [f"{name}: text sentence vs face class",
             "| text | face | n | follows face | follows text | neither |", "|---|---|---|---|---|---|"]
    for row in table:
        both = " (agree)" if row["agree"] else ""
        lines.append(f"| {row['text']} | {row['face']}{both} | {row['n']} | {row['follows_face']:.2f} | "
                     f"{row['follows_text']:.2f} | {row['neither']:.2f} |")
    return "\n".join(lines)
