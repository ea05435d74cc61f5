"""Dataset loaders, batches, augmentation order, text-state cache, distractor photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model, tiny_config
from training_testlib import make_hfm, make_mvsa, make_tombert

from clmlf.data.batches import BatchCollator, EpochOrder, PostDataset
from clmlf.data.datasets import HFM_LABELS, MVSA_LABELS, DataFormatError, load_split
from clmlf.data.distractors import distractor_images
from clmlf.data.text_cache import TextStateCache
from clmlf.model.preprocess import Preprocessor

torch.set_num_threads(1)


def test_mvsa_layout_images_translations_and_counts(tmp_path):
    make_mvsa(tmp_path, n_train=12, n_dev=6, with_images=4)
    split = load_split(tmp_path, "mvsa-single", "train")
    assert split.label_names == MVSA_LABELS
    assert [s.id for s in split.samples] == [str(i) for i in range(12)]
    by_id = {s.id: s for s in split.samples}
    assert by_id["0"].image_path is not None and by_id["0"].image_path.name == "0.jpg"
    assert by_id["1"].image_path is None  # unreadable bytes -> text only
    assert by_id["7"].image_path is None  # no file -> text only
    assert by_id["0"].translation == by_id["0"].text + " indeed"
    assert by_id["11"].translation == by_id["11"].text  # no back-translation -> the text itself
    stats = split.stats
    assert (stats.samples, stats.with_image, stats.unreadable_images, stats.missing_images) == (12, 3, 1, 8)
    assert stats.missing_translations == 1
    assert "3 with an image" in stats.summary("x") and "1 unreadable" in stats.summary("x")


def test_missing_image_folder_is_not_an_error(tmp_path):
    make_mvsa(tmp_path, with_images=0)
    for image in (tmp_path / "MVSA-single" / "dataset_image").iterdir():
        image.unlink()
    (tmp_path / "MVSA-single" / "dataset_image").rmdir()
    split = load_split(tmp_path, "mvsa-single", "dev")
    assert split.stats.with_image == 0 and split.stats.missing_images == len(split.samples)


def test_hfm_is_binary_and_reads_valid_json_as_dev(tmp_path):
    make_hfm(tmp_path)
    split = load_split(tmp_path, "hfm", "dev")
    assert split.label_names == HFM_LABELS and len(HFM_LABELS) == 2
    assert len(split.samples) == 6 and {s.label for s in split.samples} == {0, 1}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"id": "1"}', "expected a JSON list"),
        ('[{"id": "1", "text": "ok", "emotion_label": 0}, "oops"]', "entry 1: expected an object"),
        ('[{"id": "1", "text": "ok", "emotion_label": 0}, {"id": "2", "text": "x"}]', "entry 1 (id 2): 'emotion_label'"),
        ('[{"id": "1", "text": "ok", "emotion_label": 7}]', "entry 0 (id 1): 'emotion_label' must be an integer in 0..2"),
        ('[{"id": "1", "text": 5, "emotion_label": 0}]', "entry 0 (id 1): 'text' must be a string"),
        ('[{"text": "ok", "emotion_label": 0}]', "entry 0: 'id'"),
    ],
)
def test_malformed_split_names_file_and_entry(tmp_path, content, needle):
    make_mvsa(tmp_path)
    path = tmp_path / "MVSA-single" / "10-flod-1" / "train.json"
    path.write_text(content)
    with pytest.raises(DataFormatError) as err:
        load_split(tmp_path, "mvsa-single", "train")
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_malformed_translation_file_and_missing_split(tmp_path):
    make_mvsa(tmp_path)
    (tmp_path / "MVSA-single" / "MVSA-single_translation.json").write_text('[{"id": "1"}]')
    with pytest.raises(DataFormatError, match="translation.json: entry 0"):
        load_split(tmp_path, "mvsa-single", "train")
    with pytest.raises(DataFormatError, match="split file not found"):
        load_split(tmp_path, "mvsa-multiple", "train")
    with pytest.raises(DataFormatError, match="unknown dataset"):
        load_split(tmp_path, "nope", "train")


def test_tombert_aspect_format(tmp_path):
    make_tombert(tmp_path)
    split = load_split(tmp_path, "twitter15", "train")
    first, second, third = split.samples
    assert first.text == "Paris is a wonderful place to live" and first.aspect == "Paris"
    assert MVSA_LABELS[first.label] == "positive"  # TomBERT 2 = positive
    assert MVSA_LABELS[second.label] == "negative" and MVSA_LABELS[third.label] == "neutral"
    assert first.image_path is not None and second.image_path is None
    assert split.stats.missing_images == 2


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("0\t2\t1.jpg\tno placeholder here\tParis", "no $T$ placeholder"),
        ("0\t9\t1.jpg\t$T$ rocks\tParis", "label must be 0, 1 or 2"),
        ("0\t2\t1.jpg\t$T$ rocks", "expected 5 tab-separated fields, got 4"),
        ("0\t2\t1.jpg\t$T$ rocks\t ", "empty target"),
    ],
)
def test_tombert_malformed_line_is_named(tmp_path, row, needle):
    make_tombert(tmp_path, year="2017")
    path = tmp_path / "twitter2017" / "dev.tsv"
    path.write_text("index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n0\t1\t1.jpg\t$T$ ok\tA\n" + row + "\n")
    with pytest.raises(DataFormatError) as err:
        load_split(tmp_path, "twitter17", "dev")
    assert f"{path}: line 3" in str(err.value) and needle in str(err.value)


def test_aspect_batches_are_sentence_sep_aspect_sep(tmp_path):
    make_tombert(tmp_path)
    config = tiny_config().model_copy(update={"aspect": True})
    model = build_tiny_model()
    pre = Preprocessor(config, model.text_encoder.tokenizer)
    split = load_split(tmp_path, "twitter15", "train")
    batch = BatchCollator(pre)([PostDataset(split.samples, pre)[0]])
    tokens = pre.tokenizer.convert_ids_to_tokens(batch["original"]["input_ids"][0].tolist())
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    sep = tokens.index("[SEP]")
    assert tokens[1:sep] == pre.tokenizer.tokenize("Paris is a wonderful place to live")
    assert tokens[sep + 1 : -1] == ["paris"] and tokens[-1] == "[SEP]"
    assert batch["original"]["token_type_ids"][0, sep + 1 :].tolist() == [1] * (len(tokens) - sep - 1)


def _dataset(tmp_path, **kwargs):
    make_mvsa(tmp_path)
    model = build_tiny_model()
    pre = Preprocessor(tiny_config(), model.text_encoder.tokenizer)
    return PostDataset(load_split(tmp_path, "mvsa-single", "train").samples, pre, **kwargs), pre


def test_post_dataset_is_reproducible_per_seed_epoch_and_index(tmp_path):
    from clmlf.data.augment import train_image_augment

    photos = list(distractor_images(4, "train", seed=0, size=72))
    data, _ = _dataset(tmp_path, augment=train_image_augment(), with_augmented_view=True, distractors=photos,
                       distractor_rate=1.0, seed=3)
    first, again = data[0], data[0]
    assert torch.equal(first.image, again.image) and torch.equal(first.image_aug, again.image_aug)
    assert not torch.equal(first.image, first.image_aug)  # two independent augmentations
    assert data[10].distractor and data[10].image is not None  # image-less sample got a photo
    assert torch.equal(data[10].image, data[10].image_aug)  # distractors are not augmented (cacheable)
    assert not data[0].distractor  # its own image wins
    data.set_epoch(1)
    assert not torch.equal(data[0].image, first.image)


def test_augment_copies_give_each_picture_k_fixed_versions_across_epochs(tmp_path):
    from clmlf.data.augment import train_image_augment

    data, _ = _dataset(tmp_path, augment=train_image_augment(), seed=3, augment_copies=2)
    fresh, _ = _dataset(tmp_path / "fresh", augment=train_image_augment(), seed=3)
    seen, seen_fresh = [], []
    for epoch in range(12):
        data.set_epoch(epoch)
        fresh.set_epoch(epoch)
        seen.append(data[0].image)
        seen_fresh.append(fresh[0].image)

    def distinct(tensors):
        return len({t.numpy().tobytes() for t in tensors})

    assert distinct(seen) == 2  # both copies drawn, nothing else (seeded: the same draw every run)
    assert distinct(seen_fresh) >= 10
    other, _ = _dataset(tmp_path / "other", augment=train_image_augment(), seed=3, augment_copies=2)
    assert {t.numpy().tobytes() for t in seen} >= {other[0].image.numpy().tobytes()}  # same seed, same copies
    with pytest.raises(ValueError, match="augment_copies"):
        _dataset(tmp_path / "bad", augment_copies=-1)


def test_post_dataset_without_distractors_keeps_text_only_samples_image_less(tmp_path):
    data, pre = _dataset(tmp_path)
    item = data[10]
    assert item.image is None and item.image_aug is None and not item.distractor
    batch = BatchCollator(pre, with_augmented_view=True)([data[0], item])
    assert batch["original"]["image_present"].tolist() == [True, False]
    assert batch["augmented"]["input_ids"].shape[0] == 2


def test_epoch_order_shards_cover_the_epoch_and_resume_skips():
    orders = [EpochOrder(10, shuffle=True, seed=1, rank=r, world=2) for r in range(2)]
    for order in orders:
        order.set_epoch(4)
    shards = [order.indices() for order in orders]
    assert sorted(shards[0] + shards[1]) == list(range(10)) and len(shards[0]) == 5
    orders[0].set_epoch(4, start=3)
    assert list(orders[0]) == shards[0][3:] and len(orders[0]) == 2
    other = EpochOrder(10, shuffle=True, seed=1)
    other.set_epoch(5)
    same = EpochOrder(10, shuffle=True, seed=1)
    same.set_epoch(4)
    assert other.indices() != same.indices() and sorted(other.indices()) == list(range(10))


def test_text_state_cache_matches_the_encoder_and_round_trips(tmp_path):
    model = build_tiny_model()
    encoder = model.text_encoder
    encoder.freeze()
    pre = Preprocessor(tiny_config(), encoder.tokenizer)
    batch = pre.tokenize(["a happy day", "the bus is late again today"])
    expected = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    cache = TextStateCache()
    cache.install(encoder)
    got = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    again = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"].bool()
    assert torch.allclose(got[mask], expected[mask], atol=1e-2) and torch.equal(got, again)
    assert (cache.misses, cache.hits, len(cache)) == (2, 2, 2)
    cache.save(tmp_path / "c.safetensors", "tiny")
    fresh = TextStateCache()
    assert fresh.load(tmp_path / "c.safetensors", "tiny") == 2
    with pytest.raises(ValueError, match="written for encoder 'tiny'"):
        TextStateCache().load(tmp_path / "c.safetensors", "minilm")
    cache.uninstall()
    assert "forward" not in encoder.__dict__
    encoder.backbone.embeddings.word_embeddings.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen"):
        TextStateCache().install(encoder)


def test_distractor_pools_are_reproducible_and_disjoint():
    train_a = [np.asarray(im) for im in distractor_images(6, "train", seed=0, size=64)]
    train_b = [np.asarray(im) for im in distractor_images(6, "train", seed=0, size=64)]
    held_out = [np.asarray(im) for im in distractor_images(6, "eval", seed=0, size=64)]
    assert all(np.array_equal(a, b) for a, b in zip(train_a, train_b, strict=True))
    assert all(im.shape == (64, 64, 3) and im.std() > 5 for im in train_a + held_out)
    assert not any(np.array_equal(a, b) for a in train_a for b in held_out)
    with pytest.raises(ValueError):
        next(distractor_images(1, "test"))



def test_image_feature_cache_matches_the_encoder():
    from clmlf.data.image_cache import ImageFeatureCache

    encoder = build_tiny_model().image_encoder
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected_map, expected_pooled = encoder(pixels)
    cache = ImageFeatureCache(max_entries=2)
    cache.install(encoder)
    got_map, got_pooled = encoder(pixels)
    assert torch.allclose(got_map, expected_map, atol=1e-2) and torch.allclose(got_pooled, expected_pooled, atol=1e-2)
    again_map, _ = encoder(pixels[[1, 0]])
    assert torch.equal(again_map[0], got_map[1]) and (cache.hits, cache.misses, len(cache)) == (2, 3, 2)
    cache.uninstall()
    assert "forward" not in encoder.__dict__


def test_train_augmentation_is_flip_then_randaugment_2_ops_magnitude_14_of_30():
    from torchvision import transforms

    from clmlf.data.augment import train_image_augment

    flip, rand = train_image_augment().transforms
    assert isinstance(flip, transforms.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(rand, transforms.RandAugment)
    assert (rand.num_ops, rand.magnitude, rand.num_magnitude_bins) == (2, 14, 31)


def test_augmented_view_is_the_back_translation_with_its_own_image_augmentation(tmp_path):
    from clmlf.data.augment import train_image_augment

    data, pre = _dataset(tmp_path, augment=train_image_augment(), with_augmented_view=True)
    items = [data[0], data[len(data) - 1]]  # first: image + back-translation; last: neither (text itself, no image)
    batch = BatchCollator(pre, with_augmented_view=True)(items)
    decode = lambda view, row: pre.tokenizer.decode(batch[view]["input_ids"][row], skip_special_tokens=True)  # noqa: E731
    assert decode("original", 0) == data.samples[0].text.lower()
    assert decode("augmented", 0) == data.samples[0].translation.lower() and decode("augmented", 0).endswith("indeed")
    assert decode("augmented", 1) == decode("original", 1)
    assert batch["augmented"]["image_present"].tolist() == [True, False]
    assert not torch.equal(batch["original"]["pixel_values"][0], batch["augmented"]["pixel_values"][0])
