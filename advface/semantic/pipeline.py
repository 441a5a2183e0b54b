"""The differentiable path from a generator's latents to a face model's embedding, and what attacks attack.

:class:`FacePipeline` renders latents with a :class:`~advface.generators.LatentGenerator`, cuts the aligned
chip of the face model's template and embeds it, differentiably in the latents. The alignment of an identity
is measured once, on its clean render (dlib landmarks in the generator's fixed face box, or on a detected
face), and then held fixed: every perturbed render of that identity is warped with the same matrix. The
semantic-robustness source (certifyingFaceRecognition, ``models/smoothing_model.py``) likewise fed every
perturbed image through one fixed transform, though its transform resized the whole 1024x1024 frame to the
model's input; we align instead, which a model trained on aligned chips (dlib-resnet) needs.

:class:`SemanticObjective` is the attacked function (the LatentObjective protocol): coefficients ``delta``
along ``k`` attribute directions of identity rows, mapped to logits over the gallery (identification: the
source's ``-dist / sqrt(D)`` scores, success when the nearest identity is another) or to a two-class
same/different decision (verification against the row's own clean embedding at a threshold).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from advface.alignment import FaceAligner
from advface.errors import AdvfaceError
from advface.generators import get_generator_spec, load_generator
from advface.zoo import load_model

MODES = ("identify", "verify")

# Where a face is looked for when detection finds none (fractions of the image, dlib's box convention): the
# middle of the frame, where face generators put their faces. Fixed, so a row's alignment depends only on
# its own render, never on the rest of its batch.
FALLBACK_BOX = (0.2, 0.2, 0.8, 0.85)

# Squared distances below this count as 0 (keeps the square root's gradient finite at a gallery entry).
_EPS = 1e-12


def resolve_box(generator_name: str, box="auto") -> tuple[float, float, float, float] | None:
    """The face box to use: ``"auto"`` (the generator's registered ``face_box``, else None = detect),
    ``"detect"`` (None) or fractions ``(left, top, right, bottom)``, checked."""
    if isinstance(box, str):
        if box == "detect":
            return None
        if box == "auto":
            try:
                return get_generator_spec(generator_name).face_box
            except AdvfaceError:
                return None
        raise AdvfaceError(
            f"`box` is 'auto', 'detect' or (left, top, right, bottom) fractions. Received: box={box!r}."
        )
    values = tuple(float(v) for v in box)
    if not (len(values) == 4 and 0 <= values[0] < values[2] <= 1 and 0 <= values[1] < values[3] <= 1):
        raise AdvfaceError(
            f"`box` is (left, top, right, bottom) as fractions of the image. Received: box={tuple(box)!r}."
        )
    return values


def warp_chips(images, matrices, size: int) -> tf.Tensor:
    """Cut ``size x size`` chips out of images with per-image similarity (or affine) matrices.

    The same sampling as dlib's ``extract_image_chip`` when it enlarges (``interpolate_bilinear``): chip
    pixel ``p`` takes the bilinear value at ``A^-1 p`` where all four neighbouring pixels lie inside the
    image, and 0 (black) elsewhere. The forward pass is TensorFlow's ``ImageProjectiveTransformV3`` kernel
    (bilinear, black fill) times that mask; the gradient with respect to ``images`` is the exact adjoint of
    the sampling, scattered to the four neighbours of every chip pixel (the kernel's registered gradient
    warps back with the inverse matrix, which is wrong by the area ratio when the chip enlarges the face).

    Args:
        images: float32 ``(N, H, W, C)``.
        matrices: ``(N, 2, 3)`` maps image ``(x, y, 1)`` to chip ``(x, y)`` (as
            :meth:`advface.alignment.FaceAligner.chip_matrix`); not differentiated.
        size: chip side in pixels.

    Returns:
        float32 ``(N, size, size, C)``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    # 1. Chip pixel (x, y) -> image point (inverting in float64, as dlib maps in double precision).
    matrices = tf.cast(tf.convert_to_tensor(matrices), tf.float64)
    rotation = tf.linalg.inv(matrices[:, :, :2])
    offset = -tf.linalg.matvec(rotation, matrices[:, :, 2])
    inverse = tf.cast(tf.concat([rotation, offset[:, :, None]], axis=2), tf.float32)  # (N, 2, 3)
    ys, xs = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")

    def along(r):
        return (
            inverse[:, r, 0, None, None] * xs
            + inverse[:, r, 1, None, None] * ys
            + inverse[:, r, 2, None, None]
        )

    x, y = along(0), along(1)  # (N, S, S)
    # 2. dlib's rule: a chip pixel is black unless all four neighbours lie inside the image.
    left, top = tf.floor(x), tf.floor(y)
    inside = (
        (left >= 0)
        & (top >= 0)
        & (left + 1 < tf.cast(width, tf.float32))
        & (top + 1 < tf.cast(height, tf.float32))
    )
    mask = tf.cast(inside, tf.float32)[..., None]
    transforms = tf.concat([inverse[:, 0], inverse[:, 1], tf.zeros([n, 2])], axis=1)  # (N, 8)

    @tf.custom_gradient
    def sample(images):
        chips = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.stack([size, size]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )

        def adjoint(upstream):
            # 3. Every chip pixel sends its gradient to its four neighbours with the bilinear weights.
            fx, fy = (x - left)[..., None], (y - top)[..., None]
            col = tf.clip_by_value(tf.cast(left, tf.int32), 0, width - 2)
            row = tf.clip_by_value(tf.cast(top, tf.int32), 0, height - 2)
            base = tf.range(n)[:, None, None] * height * width + row * width + col
            g = upstream * mask
            weighted = [(1 - fx) * (1 - fy) * g, fx * (1 - fy) * g, (1 - fx) * fy * g, fx * fy * g]
            index = tf.stack([base, base + 1, base + width, base + width + 1])
            flat = tf.math.unsorted_segment_sum(
                tf.reshape(tf.stack(weighted), [-1, shape[3]]), tf.reshape(index, [-1]), n * height * width
            )
            return tf.reshape(flat, shape)

        return chips * mask, adjoint

    return sample(images)


class FacePipeline:
    """latents -> generator image -> aligned chip of the model's template -> embedding, differentiable.

    Alignment is computed once per identity from its clean render and then held fixed (:meth:`alignments`):
    landmarks come from dlib's 5-point model in the generator's registered face box
    (:meth:`FaceAligner.face_in_box`), or on the largest detected face when the generator has no box (a
    render without a detected face is landmarked in :data:`FALLBACK_BOX`). The perturbed face is warped
    with the same matrix by :func:`warp_chips`, a differentiable bilinear warp that samples like dlib, so
    on clean latents :meth:`embed` matches render -> ``FaceAligner.chip`` -> ``FaceModel.embed``.

    Args:
        generator: a :class:`~advface.generators.LatentGenerator` or its registry name.
        model: an embedding :class:`~advface.zoo.FaceModel` or its zoo name.
        directions: a :class:`~advface.semantic.directions.Directions` of ``k`` unit rows for
            :meth:`perturb`, or None (then only clean latents can be embedded).
        box: ``"auto"`` (the generator's face box, else detection), ``"detect"``, or fractions
            ``(left, top, right, bottom)`` of the image in dlib's box convention.

    Attributes:
        k: number of directions (0 without directions).
        embedding_size: ``D``.
        metric: the model's distance, ``"euclidean"`` or ``"cosine"`` (``1 - cos``).
        threshold: the model's verification threshold (same person when ``distance <= threshold``).

    Example:
        >>> directions = load_directions("digiface-dcgan")
        >>> pipeline = FacePipeline("digiface-dcgan", "dlib-resnet", directions=directions)
        >>> latents = pipeline.generator.sample(4, seed=0)
        >>> alignments = pipeline.alignments(latents)
        >>> pipeline.embed(pipeline.perturb(latents, np.zeros((4, pipeline.k))), alignments).shape
        TensorShape([4, 128])
    """

    def __init__(self, generator, model, *, directions=None, box="auto"):
        self.generator = load_generator(generator) if isinstance(generator, str) else generator
        self.model = load_model(model) if isinstance(model, str) else model
        if self.model.kind != "embedding" or self.model.spec.distance not in ("euclidean", "cosine"):
            raise AdvfaceError(
                f"The semantic pipeline needs an embedding model. Received: model={self.model.name!r} "
                f"({self.model.kind}). Use an embedding model such as dlib-resnet or arcface-r50."
            )
        self.template = self.model.template
        self.metric = self.model.spec.distance
        self.threshold = self.model.spec.threshold
        self.embedding_size = int(self.model.keras_model.output_shape[-1])
        self.box = resolve_box(self.generator.name, box)
        self.aligner = FaceAligner()
        self.directions = directions
        self.k = 0
        if directions is not None:
            made_for = getattr(directions, "generator", "")
            if made_for and made_for != self.generator.name:
                raise AdvfaceError(
                    f"These directions were made for another generator. Received: directions for "
                    f"{made_for!r}, generator={self.generator.name!r}. Use load_directions("
                    f"{self.generator.name!r}) or learn some with `advface semantic directions`."
                )
            matrix = np.asarray(directions.matrix, np.float32)
            if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] != self.generator.latent_size:
                raise AdvfaceError(
                    f"Directions must be (k, {self.generator.latent_size}) for {self.generator.name}. "
                    f"Received: directions.matrix.shape={matrix.shape}."
                )
            self.k = int(matrix.shape[0])
            self._directions = tf.constant(matrix)

    # -- alignment (numpy, once per identity) ---------------------------------------------------------

    def alignments(self, latents, *, batch_size: int = 64) -> np.ndarray:
        """Image -> chip matrices ``(N, 2, 3)`` float32 measured on the clean renders of ``latents``."""
        latents = self.generator.check_latents(latents)
        out = np.zeros((len(latents), 2, 3), np.float32)
        for start in range(0, len(latents), batch_size):
            images = self.generator.images(latents[start : start + batch_size], batch_size=batch_size)
            out[start : start + len(images)] = self.align_images(images)
        return out

    def align_images(self, images) -> np.ndarray:
        """Image -> chip matrices ``(N, 2, 3)`` float32 of rendered images ``(N, R, R, 3)`` in ``[0, 1]``."""
        images = np.asarray(images, np.float32)
        out = np.zeros((len(images), 2, 3), np.float32)
        for i, image in enumerate(images):
            out[i] = self.aligner.chip_matrix(self._face(image), self.template)
        return out

    def _face(self, image: np.ndarray):
        height, width = image.shape[:2]
        if self.box is None:
            faces = self.aligner.detect(image)
            if faces:
                return faces[0]
        box = self.box or FALLBACK_BOX
        return self.aligner.face_in_box(
            image, (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
        )

    # -- the differentiable path ------------------------------------------------------------------------

    def perturb(self, latents, delta) -> tf.Tensor:
        """``latents + delta @ D``: ``(N, latent_size)`` and ``(N, k)`` -> ``(N, latent_size)``.

        Per-layer StyleGAN latents ``(N, layers, latent_size)`` get the same offset in every layer. A StyleGAN
        generator's truncation then scales the perturbation by ``psi`` in its coarse layers (0.7 in the
        first 8 of 18 for FFHQ), exactly as in the source, because ``w + D delta`` is truncated like ``w``.
        """
        if self.k == 0:
            raise AdvfaceError(
                "This pipeline has no directions to perturb along. Received: directions=None. Build it with "
                "FacePipeline(generator, model, directions=load_directions(generator_name))."
            )
        latents = tf.cast(latents, tf.float32)
        offset = tf.matmul(tf.cast(delta, tf.float32), self._directions)
        if latents.shape.rank == 3:
            offset = offset[:, None, :]
        return latents + offset

    def chips(self, latents, alignments) -> tf.Tensor:
        """Aligned chips ``(N, S, S, 3)`` in ``[0, 1]`` of the renders of ``latents``."""
        return warp_chips(self.generator.synthesize(latents), alignments, self.template.size)

    def embed(self, latents, alignments) -> tf.Tensor:
        """Embeddings ``(N, D)`` of ``latents`` ``(N, latent_size)`` with fixed ``alignments`` ``(N, 2, 3)``;
        differentiable with respect to ``latents`` and traceable in ``tf.function``."""
        return self.embed_images(self.generator.synthesize(latents), alignments)

    def embed_images(self, images, alignments) -> tf.Tensor:
        """Embeddings ``(N, D)`` of rendered images ``(N, R, R, 3)`` cut with ``alignments``."""
        return self.model(warp_chips(images, alignments, self.template.size))

    @functools.cached_property
    def _embed_images_compiled(self):
        return tf.function(self.embed_images, reduce_retracing=True)

    def embed_rendered(self, images, alignments, *, batch_size: int = 64) -> np.ndarray:
        """:meth:`embed_images` compiled and batched, as numpy ``(N, D)`` float32 (for galleries)."""
        images = np.asarray(images, np.float32)
        alignments = np.asarray(alignments, np.float32)
        out = [
            self._embed_images_compiled(
                tf.constant(images[i : i + batch_size]), tf.constant(alignments[i : i + batch_size])
            ).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_size), np.float32)


def _unit(x: tf.Tensor) -> tf.Tensor:
    return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-12)


class SemanticObjective:
    """What latent attacks attack: the identity rows' latents plus ``D delta``, judged by logits.

    The LatentObjective protocol: :meth:`logits` (differentiable in ``delta``, traceable), :meth:`labels`,
    :meth:`predict`, ``num_classes`` and ``dimension`` (= ``k``). An attack succeeds when ``predict`` differs
    from ``labels``.

    Args:
        pipeline: a :class:`FacePipeline` with directions.
        identities: an :class:`~advface.semantic.identities.Identities`; ``rows`` passed to the methods are
            its global row indices (``identities.rows``).
        mode: ``"identify"``: logits ``-dist(emb, gallery_j) / sqrt(D)`` over the gallery, label = the row's
            own gallery index (success: the nearest identity is another, as in the source).
            ``"verify"``: logits ``[-dist_own / sqrt(D), -threshold / sqrt(D)]`` with ``dist_own`` the
            distance to the row's own clean embedding, label 0 (success: the distance passes the threshold).
        threshold: verification threshold; default the model's.
        gallery: identification gallery: None (``identities`` themselves, as the source's gallery of all
            generated identities), another ``Identities`` (entry = its position; it must hold the rows
            attacked), or embeddings ``(G, D)`` whose entry ``j`` is identity ``j``.
    """

    def __init__(
        self, pipeline: FacePipeline, identities, *, mode: str = "identify", threshold=None, gallery=None
    ):
        if mode not in MODES:
            raise AdvfaceError(f"Unknown objective mode. Received: mode={mode!r}. Known: {', '.join(MODES)}.")
        if pipeline.k == 0:
            raise AdvfaceError(
                "The objective perturbs along attribute directions. Received: a pipeline with "
                "directions=None. Build the FacePipeline with directions=load_directions(generator_name)."
            )
        rows = np.asarray(identities.rows, np.int64).reshape(-1)
        latents = np.asarray(identities.latents, np.float32)
        embeddings = np.asarray(identities.embeddings, np.float32)
        if len(rows) == 0 or latents.shape[-1] != pipeline.generator.latent_size:
            raise AdvfaceError(
                f"Identities must hold latents of {pipeline.generator.name}, (N, "
                f"{pipeline.generator.latent_size}). Received: latents.shape={latents.shape}."
            )
        if embeddings.shape != (len(rows), pipeline.embedding_size):
            raise AdvfaceError(
                f"Identities must hold {pipeline.model.name} embeddings (N, {pipeline.embedding_size}). "
                f"Received: embeddings.shape={embeddings.shape}. Generate them with that model."
            )
        self.pipeline = pipeline
        self.identities = identities
        self.mode = mode
        self.dimension = pipeline.k
        self._scale = 1.0 / math.sqrt(pipeline.embedding_size)
        self._position = _lookup(rows)
        self._position_tf = tf.constant(self._position)
        self._latents = tf.constant(latents)
        self._alignments = tf.constant(np.asarray(identities.alignments, np.float32))
        self._own = tf.constant(embeddings)
        if mode == "verify":
            if gallery is not None:
                raise AdvfaceError(
                    "Verification compares each row with its own clean embedding. Received: a gallery with "
                    "mode='verify'. Leave gallery=None, or use mode='identify'."
                )
            threshold = pipeline.threshold if threshold is None else threshold
            if threshold is None or not np.isfinite(threshold) or threshold <= 0:
                raise AdvfaceError(
                    f"Verification needs a positive threshold. Received: threshold={threshold!r}. Pass one "
                    "(e.g. calibrated with advface.verification.calibrate_threshold)."
                )
            self.threshold = float(threshold)
            self.num_classes = 2
            return
        self.threshold = None if threshold is None else float(threshold)
        if gallery is None:
            entries, self._gallery_index = embeddings, self._position
        elif hasattr(gallery, "embeddings") and hasattr(gallery, "rows"):
            entries, self._gallery_index = np.asarray(gallery.embeddings, np.float32), _lookup(gallery.rows)
        else:
            entries = np.asarray(gallery, np.float32)
            self._gallery_index = np.arange(len(entries), dtype=np.int32)
        if entries.ndim != 2 or entries.shape[1] != pipeline.embedding_size or len(entries) < 2:
            raise AdvfaceError(
                f"The gallery must be embeddings (G, {pipeline.embedding_size}) with G >= 2. Received: "
                f"gallery.shape={entries.shape}."
            )
        self.num_classes = int(len(entries))
        if pipeline.metric == "cosine":
            entries = entries / np.maximum(np.linalg.norm(entries, axis=1, keepdims=True), 1e-12)
        self._gallery = tf.constant(entries)
        self._gallery_sq = tf.constant(np.sum(entries.astype(np.float64) ** 2, axis=1).astype(np.float32))

    def logits(self, delta, rows) -> tf.Tensor:
        """Logits ``(B, C)`` of identity ``rows`` ``(B,)`` int moved by ``delta`` ``(B, k)`` float32.

        Differentiable with respect to ``delta``; traceable in ``tf.function``.
        """
        if tf.executing_eagerly():
            self._positions(rows)  # a readable error for unknown rows (graphs only get tf.gather's)
        rows = tf.cast(rows, tf.int32)
        position = tf.gather(self._position_tf, rows)
        latents = self.pipeline.perturb(tf.gather(self._latents, position), delta)
        embeddings = self.pipeline.embed(latents, tf.gather(self._alignments, position))
        if self.mode == "verify":
            own = tf.gather(self._own, position)
            if self.pipeline.metric == "cosine":
                distance = 1.0 - tf.reduce_sum(_unit(embeddings) * _unit(own), axis=-1)
            else:
                distance = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(embeddings - own), axis=-1), _EPS))
            threshold = tf.fill(tf.shape(distance), tf.constant(self.threshold, tf.float32))
            return -tf.stack([distance, threshold], axis=1) * self._scale
        if self.pipeline.metric == "cosine":
            distance = 1.0 - tf.matmul(_unit(embeddings), self._gallery, transpose_b=True)
        else:
            squared = (
                tf.reduce_sum(tf.square(embeddings), axis=1, keepdims=True)
                + self._gallery_sq[None, :]
                - 2.0 * tf.matmul(embeddings, self._gallery, transpose_b=True)
            )
            distance = tf.sqrt(tf.maximum(squared, _EPS))
        return -distance * self._scale

    def labels(self, rows) -> np.ndarray:
        """``(B,)`` int: each row's own gallery index (identify) or 0 (verify: "same person")."""
        self._positions(rows)
        rows = np.asarray(rows, np.int64).reshape(-1)
        if self.mode == "verify":
            return np.zeros(len(rows), np.int64)
        index = self._gallery_index
        known = (rows >= 0) & (rows < len(index))
        labels = np.where(known, index[np.clip(rows, 0, len(index) - 1)], -1).astype(np.int64)
        if np.any(labels < 0):
            raise AdvfaceError(
                f"These identities are not in the gallery. Received: rows={rows[labels < 0][:10].tolist()}. "
                "Use a gallery that holds every attacked identity."
            )
        return labels

    @functools.cached_property
    def _logits_compiled(self):
        return tf.function(self.logits, reduce_retracing=True)

    def predict(self, delta, rows, *, batch_size: int = 100) -> np.ndarray:
        """Arg-max of :meth:`logits`, numpy ``(B,)`` int, in compiled batches of ``batch_size``."""
        delta = np.asarray(delta, np.float32).reshape(-1, self.dimension)
        rows = np.asarray(rows, np.int32).reshape(-1)
        if len(delta) != len(rows):
            raise AdvfaceError(
                f"`delta` and `rows` must have one entry per item. Received: delta.shape={delta.shape}, "
                f"rows.shape={rows.shape}."
            )
        self._positions(rows)
        out = [
            np.argmax(
                self._logits_compiled(
                    tf.constant(delta[i : i + batch_size]), tf.constant(rows[i : i + batch_size])
                ).numpy(),
                axis=1,
            )
            for i in range(0, len(rows), batch_size)
        ]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def _positions(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        table = self._position
        known = (rows >= 0) & (rows < len(table))
        positions = np.where(known, table[np.clip(rows, 0, len(table) - 1)], -1)
        if np.any(positions < 0):
            held = np.asarray(self.identities.rows)
            raise AdvfaceError(
                f"Unknown identity rows. Received: rows={rows[positions < 0][:10].tolist()}. These "
                f"identities hold rows {int(held.min())}..{int(held.max())} ({len(held)} of them)."
            )
        return positions


def _lookup(rows) -> np.ndarray:
    """Global row -> position table (-1 for rows not held)."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    if len(rows) and (rows.min() < 0 or len(np.unique(rows)) != len(rows)):
        raise AdvfaceError(f"Identity rows must be distinct and >= 0. Received: rows={rows[:10].tolist()}...")
    table = np.full(int(rows.max()) + 1 if len(rows) else 0, -1, np.int32)
    table[rows] = np.arange(len(rows), dtype=np.int32)
    return table
