"""The labelling core: raw posts -> CONTRACT.md result records, one code path for every caller.

    labeller = Labeller.for_predictor(predictor, fetcher.post_image_bytes)
    outcomes = labeller.label(lines)  # per line, in order: a ResultRecord, or the InvalidPost it raised

``clmlf predict`` calls :meth:`Labeller.label` on each chunk of its input. The stream
(``clmlf-monitor run``) runs the same steps, one by one, on its own threads, and adds
only Kafka, time-based micro-batching and Redis around them:

=========================  ===================================  ===============================
step                       the core                             the stream stage that runs it
=========================  ===================================  ===============================
parse the raw post         :func:`contract.posts.parse_post`    consumer loop (invalid: DLQ)
encode its text            :meth:`Labeller.encode`              consumer loop (off the model thread)
resolve its image          :class:`ImageResolver`               image stage (thread pool)
predict a batch            :meth:`Labeller.predict`             model worker (micro-batches)
build the result record    :func:`result_record`                sink writer (then Redis)
=========================  ===================================  ===============================

The image, as the model needs it: a post without an image source is ``none``; a
checkpoint trained without images (``trained_with_images: false``) neither fetches nor
decodes one (``ignored``); otherwise the image is fetched and decoded (``used``), and
when that fails for any reason the post is labelled on its text alone (``failed``).

Event time (:func:`event_time`) is the post's ``created_at``, else the time the caller
received the post: the Kafka record timestamp in the stream, the labelling time in
``clmlf predict``.

Nothing heavy is imported here (no torch): the predictor module is imported when a batch
is predicted, so the stream's light modules can share :func:`event_time`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from contract.posts import ImageStatus, InvalidPost, Post, ResultRecord, build_result, parse_post

if TYPE_CHECKING:
    from clmlf.serving.inference import Prediction, Predictor

FetchBytes = Callable[[Post], bytes | None]
DecodeImage = Callable[[bytes], Any]
DecodedPixels = Callable[[bytes], int]
log = logging.getLogger(__name__)


class PixelBudget(Protocol):
    """Pixels that may be decoded at once (``consumers.decode_budget.DecodeBudget``)."""

    def reserve(self, pixels: int) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """A post's image as the model takes it.

    ``tensor``: the model input (None unless ``status`` is ``used``); ``status``: the result
    record's ``image``; ``outcome``: the metric label, the status or, for ``failed``, why.
    """

    tensor: Any
    status: ImageStatus
    outcome: str


NO_IMAGE = ResolvedImage(None, "none", "none")
IGNORED = ResolvedImage(None, "ignored", "ignored")


class ImageResolver:
    """Post -> :class:`ResolvedImage`; thread-safe (the stream calls it from a pool).

    ``fetch``: the post's image bytes (None: it has none); ``decode``: bytes -> tensor;
    ``use_images`` False (a text-only model): nothing is ever fetched or decoded.
    ``budget`` + ``decoded_pixels`` (header -> pixels): each decode holds its pixels from the
    budget until the image is a tensor. Failures are logged at ``failure_level``.
    """

    def __init__(
        self,
        fetch: FetchBytes,
        decode: DecodeImage,
        *,
        use_images: bool = True,
        budget: PixelBudget | None = None,
        decoded_pixels: DecodedPixels | None = None,
        failure_level: int = logging.DEBUG,
    ) -> None:
        if (budget is None) != (decoded_pixels is None):
            raise ValueError("give both budget and decoded_pixels, or neither")
        self._fetch = fetch
        self._decode = decode
        self.use_images = use_images
        self.budget = budget
        self._pixels = decoded_pixels
        self._failure_level = failure_level

    def needs_io(self, post: Post) -> bool:
        """True when resolving ``post`` fetches and decodes (worth a worker thread)."""
        return self.use_images and post.has_image_source

    def __call__(self, post: Post) -> ResolvedImage:
        if not post.has_image_source:
            return NO_IMAGE
        if not self.use_images:
            return IGNORED
        try:
            data = self._fetch(post)
            if data is None:
                return NO_IMAGE
            budget, pixels = self.budget, self._pixels
            with budget.reserve(pixels(data)) if budget is not None and pixels is not None else nullcontext():
                return ResolvedImage(self._decode(data), "used", "used")
        except Exception as exc:  # one post, one fate: any image failure leaves the post text-only
            reason = str(getattr(exc, "reason", None) or type(exc).__name__)
            log.log(
                self._failure_level, "post %s: image failed (%s), classified on its text", post.id, reason
            )
            return ResolvedImage(None, "failed", reason)


def event_time(post: Post, received_at: float) -> float:
    """When the post happened (epoch seconds): its ``created_at``, else ``received_at``."""
    return post.created_at if post.created_at is not None else received_at


def result_record(
    post: Post,
    prediction: Prediction,
    *,
    image: ImageStatus,
    model: str,
    received_at: float,
    processed_at: float,
) -> ResultRecord:
    """The CONTRACT.md result record of one labelled post."""
    return build_result(
        post,
        prediction.label,
        prediction.scores,
        event_time=event_time(post, received_at),
        processed_at=processed_at,
        model=model,
        image=image,
    )


class Labeller:
    """One model's labelling: raw posts in, result records out (not thread-safe: the predictor
    belongs to one thread; :attr:`images` may be called from any)."""

    def __init__(
        self, predictor: Predictor, images: ImageResolver, clock: Callable[[], float] = time.time
    ) -> None:
        self.predictor = predictor
        self.images = images
        self.model_name: str = predictor.model_name
        self._clock = clock

    @classmethod
    def for_predictor(
        cls,
        predictor: Predictor,
        fetch: FetchBytes,
        *,
        max_image_pixels: int | None = None,
        budget: PixelBudget | None = None,
        failure_level: int = logging.DEBUG,
        clock: Callable[[], float] = time.time,
    ) -> Labeller:
        """The labeller of ``predictor``, its images fetched by ``fetch`` and decoded by its
        preprocessor (refusing images over ``max_image_pixels``; None: the decoder's default),
        within ``budget`` when given. A model trained without images ignores them."""
        preprocessor = predictor.preprocessor
        use_images = bool(preprocessor.config.trained_with_images)

        def decode(data: bytes) -> Any:
            if max_image_pixels is None:
                return preprocessor.image_from_bytes(data)
            return preprocessor.image_from_bytes(data, max_pixels=max_image_pixels)

        budget = budget if use_images else None
        images = ImageResolver(
            fetch,
            decode,
            use_images=use_images,
            budget=budget,
            decoded_pixels=preprocessor.decoded_pixels if budget is not None else None,
            failure_level=failure_level,
        )
        return cls(predictor, images, clock)

    @property
    def uses_images(self) -> bool:
        """False for a checkpoint trained without images: every image is ``ignored``."""
        return self.images.use_images

    def encode(self, post: Post) -> Any:
        """The post's text as the model reads it (``clmlf.model.preprocess.TextTokens``; its length is
        the post's cost in a batch). Thread-safe: the stream encodes on its consumer loop."""
        return self.predictor.preprocessor.encode([post.text], [post.aspect])[0]

    def predict(
        self,
        posts: Sequence[Post],
        images: Sequence[Any],
        batch_size: int | None = None,
        tokens: Sequence[Any] | None = None,
        on_batch: Callable[[int], object] | None = None,
    ) -> list[Prediction]:
        """Label ``posts`` (with their image tensors, None for none) in batches of ``batch_size``
        (None: the predictor's); the predictions are in the order of ``posts``. ``tokens``: the
        posts' :meth:`encode` results where already made (None entries are encoded here);
        ``on_batch(n)`` after each batch of n posts."""
        from clmlf.serving.inference import InferenceItem

        tokens = tokens if tokens is not None else [None] * len(posts)
        items = [
            InferenceItem(post.text, post.aspect, image, encoded)
            for post, image, encoded in zip(posts, images, tokens, strict=True)
        ]
        return self.predictor.predict(items, batch_size=batch_size, on_batch=on_batch)

    def label(
        self,
        raws: Sequence[bytes | str],
        map_images: Callable[
            [Callable[[Post], ResolvedImage], Iterable[Post]], Iterable[ResolvedImage]
        ] = map,
        on_batch: Callable[[int], object] | None = None,
    ) -> list[ResultRecord | InvalidPost]:
        """Every step for a batch of raw posts: per input, in order, its result record or the
        :class:`~contract.posts.InvalidPost` its parse raised. Images are resolved through
        ``map_images`` (e.g. a thread pool's ``map``); posts are received, and processed, now.
        ``on_batch(n)``: after each model batch of n posts (progress within a long call)."""
        parsed: list[Post | InvalidPost] = []
        for raw in raws:
            try:
                parsed.append(parse_post(raw))
            except InvalidPost as exc:
                parsed.append(exc)
        posts = [post for post in parsed if isinstance(post, Post)]
        images = list(map_images(self.images, posts))
        predictions = self.predict(posts, [image.tensor for image in images], on_batch=on_batch)
        now = self._clock()
        results = iter(
            [
                result_record(
                    post,
                    prediction,
                    image=image.status,
                    model=self.model_name,
                    received_at=now,
                    processed_at=now,
                )
                for post, image, prediction in zip(posts, images, predictions, strict=True)
            ]
        )
        return [next(results) if isinstance(item, Post) else item for item in parsed]
