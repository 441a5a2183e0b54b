"""Train face models on a folder of faces: an identity classifier, or a siamese verification net.

The folder holds one sub-folder per identity (``DIR/<name>/*.jpg``). Photos are aligned with the
backbone's template (dlib detection and landmarks) or, with ``aligned=True``, taken as ready chips. The
default backbone is the frozen ``dlib-resnet`` embedding with a small head, so a 10-identity classifier
trains in a minute on a CPU; any zoo embedding model can be the backbone and can be fine-tuned.

Every run writes a run folder (``config.json``, ``history.csv``, ``skipped.tsv``, ``confusion.tsv`` or
``pairs.tsv``, ``summary.json``), keeps a backup each epoch so that re-running the same command resumes
where a killed run stopped, and registers the result in ``saved-models/`` (``<name>.weights.h5``,
``<name>.json``, a ``MODELS.md`` row) so that ``advface.zoo.load_model(name)`` loads it back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from advface.errors import AdvfaceError, ImageError, NoFaceError
from advface.images import check_images, list_images, load_image
from advface.progress import ProgressCallback, report
from advface.runs import ResultsTable, write_config
from advface.savedmodels import store, weights_file


@dataclass(frozen=True)
class FaceFolder:
    """Aligned chips of a folder with one sub-folder per identity.

    Attributes:
        identities: sub-folder names, sorted (class index order).
        chips: float32 ``(N, S, S, 3)`` in ``[0, 1]``.
        labels: int ``(N,)`` class indices into ``identities``.
        paths: the photo of each chip.
        skipped: ``(path, reason)`` of photos that gave no chip.
    """

    identities: tuple[str, ...]
    chips: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    paths: tuple[Path, ...] = field(repr=False)
    skipped: tuple[tuple[Path, str], ...] = ()


def load_face_folder(
    data, template, *, aligned: bool = False, aligner=None, progress: ProgressCallback | None = None
) -> FaceFolder:
    """Read ``data/<identity>/*`` into aligned chips of ``template`` (see :class:`FaceFolder`).

    Photos without a readable face are skipped and listed, not fatal; an identity left with no photo is
    an error, because a classifier cannot learn it.
    """
    from advface.alignment import FaceAligner, get_template

    data = Path(data)
    template = get_template(template)
    if not data.is_dir():
        raise AdvfaceError(
            f"Expected a folder with one sub-folder per identity. Received: data={str(data)!r}."
        )
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise AdvfaceError(
            f"Need at least 2 identity sub-folders in {data}. Received: {len(folders)}. Put each person's "
            "photos in their own sub-folder (DIR/alice/1.jpg, DIR/bob/1.jpg ...)."
        )
    files = [(path, i) for i, folder in enumerate(folders) for path in list_images(folder)]
    aligner = aligner or (None if aligned else FaceAligner())
    chips, labels, paths, skipped = [], [], [], []
    for step, (path, label) in enumerate(files, 1):
        try:
            image = load_image(path)
            if aligned:
                chip = tf.image.resize(image[None], (template.size, template.size), antialias=True)[0].numpy()
                chip = np.clip(chip, 0.0, 1.0)
            else:
                chip = aligner.align_one(image, template, source=str(path)).chip
            chips.append(chip.astype(np.float32))
            labels.append(label)
            paths.append(path)
        except (ImageError, NoFaceError) as exc:
            skipped.append((path, str(exc).split(".")[0]))
        report(progress, step, len(files), "align")
    counts = Counter(labels)
    empty = [folders[i].name for i in range(len(folders)) if counts[i] == 0]
    if empty:
        raise AdvfaceError(
            f"No usable face in the photos of {', '.join(empty)} (see which files failed with "
            "`advface align`). Add frontal photos, or pass --aligned if the photos are already face chips."
        )
    return FaceFolder(
        identities=tuple(f.name for f in folders),
        chips=np.stack(chips),
        labels=np.asarray(labels, np.int64),
        paths=tuple(paths),
        skipped=tuple(skipped),
    )


def split_images(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image-level stratified split: about ``fraction`` of each identity's photos for validation, never
    all of them (an identity with one photo stays in training). Returns (train, validation) indices."""
    train, val = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(int(round(fraction * len(idx))), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))


def split_identities(
    n_identities: int, fractions: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identity-disjoint split into (train, validation, test) identity indices; ``fractions`` are the
    validation and test shares. Each part gets at least one identity."""
    if n_identities < 3:
        raise AdvfaceError(
            f"An identity-disjoint split needs at least 3 identities (train, validation, test). "
            f"Received: {n_identities}."
        )
    order = rng.permutation(n_identities)
    n_val = max(1, int(round(fractions[0] * n_identities)))
    n_test = max(1, int(round(fractions[1] * n_identities)))
    if n_val + n_test >= n_identities:
        n_val, n_test = 1, 1
    return np.sort(order[n_val + n_test :]), np.sort(order[:n_val]), np.sort(order[n_val : n_val + n_test])


def balanced_class_weights(labels: np.ndarray, classes: int) -> dict[int, float]:
    """``n / (classes * count_c)`` per class (scikit-learn's "balanced")."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = len(labels) / (classes * np.maximum(counts, 1.0))
    return {i: float(w) for i, w in enumerate(weights)}


def augmenter(seed: int) -> keras.Sequential:
    """Mild photometric and geometric jitter of aligned chips (flip, rotation, shift, zoom, light)."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.03, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomTranslation(0.04, 0.04, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomZoom(0.06, fill_mode="reflect", seed=seed + 3),
            keras.layers.RandomBrightness(0.12, value_range=(0.0, 1.0), seed=seed + 4),
            keras.layers.RandomContrast(0.2, seed=seed + 5),
        ],
        name="augment",
    )


def _backbone(name: str) -> keras.Model:
    from advface.zoo import get_spec

    spec = get_spec(name)
    if spec.kind != "embedding":
        raise AdvfaceError(
            f"The backbone must be an embedding model. Received: backbone={name!r} ({spec.kind})."
        )
    if not spec.available():
        from advface.zoo import load_model

        load_model(name)  # raises the message that says how to get the weights
    return spec.build()


def build_classifier(
    backbone: keras.Model,
    classes: int,
    *,
    hidden: int = 128,
    fine_tune: bool = False,
    name: str = "classifier",
) -> keras.Model:
    """Chips -> ``backbone`` -> Dense(hidden, relu) -> Dropout -> Dense(classes) logits."""
    backbone.trainable = fine_tune
    inputs = keras.Input(backbone.input_shape[1:], name="chip")
    x = backbone(inputs, training=False) if not fine_tune else backbone(inputs)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(0.3, name="dropout")(x)
    logits = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def build_trained(meta: dict, *, weights=None) -> keras.Model:
    """Rebuild a model ``advface train`` registered (its ``saved-models/<name>.json``) and load ``weights``
    (a zoo name or a ``.weights.h5`` path)."""
    from advface.networks.siamese import siamese_tower
    from advface.savedmodels import resolve_weights

    backbone = _backbone(meta["backbone"])
    if meta["architecture"] == "classifier":
        model = build_classifier(backbone, len(meta["labels"]), hidden=meta["hidden"])
    elif meta["architecture"] == "siamese":
        model = siamese_tower(backbone, projection=meta["projection"])
    else:
        raise AdvfaceError(f"Unknown trained architecture {meta['architecture']!r}; re-train the model.")
    path = resolve_weights(weights)
    if path is not None:
        model.load_weights(path)
    return model


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes:
        name: the zoo name it was registered under.
        run_dir: the run folder.
        weights: ``saved-models/<name>.weights.h5``.
        epochs: epochs trained in total (including earlier, resumed runs).
        sizes: images (classifier) or pairs (siamese) per split.
        metrics: final figures (accuracy per split; for siamese the threshold and pair accuracies).
        labels: identities (classifier classes, or all identities seen for siamese).
        confusion: classifier validation confusion matrix (rows true, columns predicted), or None.
        skipped: photos that gave no face.
    """

    name: str
    run_dir: Path
    weights: Path
    epochs: int
    sizes: dict
    metrics: dict
    labels: tuple[str, ...]
    confusion: np.ndarray | None = field(default=None, repr=False)
    skipped: tuple[tuple[Path, str], ...] = ()


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, progress, epochs: int):
        super().__init__()
        self._progress, self._epochs = progress, epochs

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        report(self._progress, epoch + 1, self._epochs, "train", **metrics)


def _check_common(name: str, epochs: int, batch_size: int, learning_rate: float, overwrite: bool) -> None:
    from advface.zoo import ZOO

    if not name or any(c in name for c in "/\\ ") or name in ZOO:
        raise AdvfaceError(
            f"`name` must be a new model name without spaces or slashes, not a built-in zoo model. "
            f"Received: name={name!r}."
        )
    for key, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise AdvfaceError(f"`{key}` must be >= 1. Received: {key}={value}.")
    if not learning_rate > 0:
        raise AdvfaceError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate}.")
    if weights_file(name).exists() and not overwrite:
        raise AdvfaceError(f"{weights_file(name)} exists. Choose another --name or pass --overwrite.")


def _dataset(x, y, batch_size: int, *, augment: keras.Model | None, shuffle_seed: int | None, weights=None):
    parts = (x, y) if weights is None else (x, y, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:

        def jitter(*batch):
            images = batch[0]
            if isinstance(images, tuple):
                images = tuple(tf.clip_by_value(augment(im, training=True), 0.0, 1.0) for im in images)
            else:
                images = tf.clip_by_value(augment(images, training=True), 0.0, 1.0)
            return (images, *batch[1:])

        ds = ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _fit(model, train_ds, val_ds, *, run_dir: Path, epochs: int, progress, monitor: str) -> None:
    """model.fit with a resumable backup, the best weights by ``monitor``, a CSV history and progress."""
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        _ProgressCallback(progress, epochs),
    ]
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)


def _register(model, name: str, meta: dict, *, run_dir: Path, best: Path | None = None) -> Path:
    """Load ``best`` weights (if given and present) into ``model`` and store it in saved-models as
    ``name`` with ``meta`` (:func:`advface.savedmodels.store`)."""
    if best is not None and best.is_file():
        model.load_weights(best)
    origin = f"trained by advface on {meta['data']} (run {run_dir})"
    return store(model, name, origin=origin, command=meta["command"], meta=meta)[0]


def _write_skipped(run_dir: Path, folder: FaceFolder) -> None:
    table = ResultsTable(run_dir / "skipped.tsv", ["path", "reason"])
    for path, reason in folder.skipped:
        if str(path) not in table.done:
            table.add({"path": str(path), "reason": reason})


def train_classifier(
    data,
    *,
    name: str,
    run_dir,
    backbone: str = "dlib-resnet",
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.2,
    split: str = "image",
    augment: bool = True,
    fine_tune: bool = False,
    hidden: int = 128,
    aligned: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train an identity classifier on ``data/<identity>/*`` and register it in the zoo as ``name``.

    Args:
        data: folder with one sub-folder of photos per identity.
        name: zoo name for the trained model (``advface.zoo.load_model(name)``).
        run_dir: run folder; re-running with the same folder resumes from the last finished epoch.
        backbone: zoo embedding model under the head (frozen unless ``fine_tune``).
        epochs, batch_size, learning_rate: Adam training schedule.
        validation_fraction: share of each identity's photos held out (image-level split).
        split: ``"image"``; an identity-disjoint split cannot evaluate a closed-set classifier (it would
            validate on people it has no class for), so it is refused with advice to use the siamese net.
        augment: flip / rotate / shift / zoom / brightness / contrast jitter each epoch.
        fine_tune: train the backbone too.
        hidden: units of the head's hidden layer (0: a linear head).
        aligned: the photos are already aligned chips of the backbone's template.
        seed: split, shuffling, augmentation and initialisation seed.
        overwrite: replace an existing model of that name.
        progress: called once per epoch (stage ``"train"``) and per photo while aligning.

    Returns:
        The :class:`TrainingResult`, with the validation confusion matrix.
    """
    from advface.zoo import get_spec

    _check_common(name, epochs, batch_size, learning_rate, overwrite)
    if split != "image":
        raise AdvfaceError(
            f"A classifier needs every identity in training, so its validation split is per image. Received: "
            f"split={split!r}. For identities unseen in training, train an embedding model: "
            "`advface train siamese` (identity-disjoint by design)."
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise AdvfaceError(f"`validation_fraction` must be in [0, 1). Received: {validation_fraction}.")
    run_dir = Path(run_dir)
    arguments = {k: v for k, v in locals().items() if k not in ("progress", "get_spec")}
    template = get_spec(backbone).template
    write_config(run_dir, "train classifier", arguments, seed=seed)
    keras.utils.set_random_seed(seed)

    # 1. Faces, aligned for the backbone.
    folder = load_face_folder(data, template, aligned=aligned, progress=progress)
    _write_skipped(run_dir, folder)
    classes = len(folder.identities)

    # 2. Image-level stratified split and balanced class weights.
    rng = np.random.default_rng(seed)
    train_idx, val_idx = split_images(folder.labels, validation_fraction, rng)
    class_weight = balanced_class_weights(folder.labels[train_idx], classes)
    sample_weight = np.asarray([class_weight[int(c)] for c in folder.labels[train_idx]], np.float32)

    # 3. Model: backbone (frozen by default) + small head, logits out.
    model = build_classifier(_backbone(backbone), classes, hidden=hidden, fine_tune=fine_tune, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    # 4. Train with a resumable backup; keep the best validation weights.
    train_ds = _dataset(
        folder.chips[train_idx],
        folder.labels[train_idx],
        batch_size,
        augment=augmenter(seed) if augment else None,
        shuffle_seed=seed,
        weights=sample_weight,
    )
    val_ds = (
        _dataset(folder.chips[val_idx], folder.labels[val_idx], batch_size, augment=None, shuffle_seed=None)
        if len(val_idx)
        else None
    )
    _fit(
        model,
        train_ds,
        val_ds,
        run_dir=run_dir,
        epochs=epochs,
        progress=progress,
        monitor="val_loss" if val_ds is not None else "loss",
    )

    # 5. Register, then summarise on the held-out photos (training photos when there are none).
    meta = {
        "architecture": "classifier",
        "kind": "classifier",
        "backbone": backbone,
        "hidden": hidden,
        "template": template,
        "labels": list(folder.identities),
        "data": str(Path(data)),
        "description": f"{classes}-identity classifier on {backbone} (advface train classifier)",
        "command": f"advface train classifier --data {data} --name {name}",
    }
    weights = _register(model, name, meta, run_dir=run_dir, best=run_dir / "best.weights.h5")
    predicted = np.argmax(model.predict(folder.chips, batch_size=batch_size, verbose=0), axis=1)
    correct = predicted == folder.labels
    metrics = {"train_accuracy": float(np.mean(correct[train_idx]))}
    if len(val_idx):
        metrics["validation_accuracy"] = float(np.mean(correct[val_idx]))
    eval_idx = val_idx if len(val_idx) else train_idx
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (folder.labels[eval_idx], predicted[eval_idx]), 1)
    _write_confusion(run_dir / "confusion.tsv", confusion, folder.identities)
    result = TrainingResult(
        name=name,
        run_dir=run_dir,
        weights=weights,
        epochs=epochs,
        sizes={"train": int(len(train_idx)), "validation": int(len(val_idx)), "skipped": len(folder.skipped)},
        metrics=metrics,
        labels=folder.identities,
        confusion=confusion,
        skipped=folder.skipped,
    )
    _write_summary(run_dir, result)
    return result


def _write_confusion(path: Path, confusion: np.ndarray, labels) -> None:
    lines = ["true\\predicted\t" + "\t".join(labels)]
    lines += [
        f"{label}\t" + "\t".join(str(int(v)) for v in row)
        for label, row in zip(labels, confusion, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def _write_summary(run_dir: Path, result: TrainingResult) -> None:
    import json

    summary = {
        "name": result.name,
        "weights": str(result.weights),
        "epochs": result.epochs,
        "sizes": result.sizes,
        "metrics": result.metrics,
        "labels": list(result.labels),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def confusion_summary(result: TrainingResult, *, top: int = 5) -> str:
    """A few lines for people: per-identity recall and the most frequent confusions."""
    if result.confusion is None:
        return ""
    confusion, labels = result.confusion, result.labels
    lines = []
    for i, label in enumerate(labels):
        total = int(confusion[i].sum())
        if total:
            lines.append(f"  {label}: {int(confusion[i, i])}/{total} correct")
    off = [
        (int(confusion[i, j]), labels[i], labels[j])
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and confusion[i, j]
    ]
    for count, true, pred in sorted(off, reverse=True)[:top]:
        lines.append(f"  confused {true} -> {pred}: {count}")
    return "\n".join(lines)


def make_pairs(
    labels: np.ndarray,
    identities: np.ndarray,
    rng: np.random.Generator,
    *,
    max_positive_per_identity: int = 50,
) -> np.ndarray:
    """Balanced pairs among images of ``identities``: every (or up to ``max_positive_per_identity``)
    same-person pair, and as many different-person pairs drawn at random. Returns ``(P, 3)`` int rows
    ``(i, j, same)``."""
    positives, members = [], {}
    for identity in identities:
        idx = np.flatnonzero(labels == identity)
        members[int(identity)] = idx
        pairs = [(a, b) for k, a in enumerate(idx) for b in idx[k + 1 :]]
        if len(pairs) > max_positive_per_identity:
            pairs = [pairs[i] for i in rng.choice(len(pairs), max_positive_per_identity, replace=False)]
        positives += pairs
    pool = [i for idx in members.values() for i in idx]
    negatives, seen, tries = [], set(), 0
    if len(members) >= 2:
        while len(negatives) < len(positives) and tries < 100 * max(1, len(positives)):
            tries += 1
            a, b = rng.choice(pool, 2, replace=False)
            if labels[a] != labels[b] and (min(a, b), max(a, b)) not in seen:
                seen.add((min(a, b), max(a, b)))
                negatives.append((a, b))
    rows = [(a, b, 1) for a, b in positives] + [(a, b, 0) for a, b in negatives]
    return np.asarray(rows, np.int64).reshape(-1, 3)


def train_siamese(
    data,
    *,
    name: str,
    run_dir,
    backbone: str = "dlib-resnet",
    epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    margin: float = 0.5,
    projection: int = 128,
    split_fractions: tuple[float, float] = (0.2, 0.2),
    augment: bool = True,
    fine_tune: bool = False,
    aligned: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train a siamese verification net (shared tower, cosine similarity, contrastive loss) and register
    its tower in the zoo as the embedding model ``name`` (cosine distance, threshold chosen on the
    validation pairs).

    Identities are disjoint across train / validation / test (``split_fractions`` = validation and test
    shares of the identities); pairs are balanced, same-person and different-person, drawn with ``seed``.
    Other arguments as :func:`train_classifier`; ``margin`` is the contrastive margin in cosine distance.
    """
    from advface.networks.siamese import contrastive_loss, siamese_pair_model, siamese_tower
    from advface.zoo import get_spec

    _check_common(name, epochs, batch_size, learning_rate, overwrite)
    run_dir = Path(run_dir)
    arguments = {k: v for k, v in locals().items() if k not in ("progress", "get_spec") and not callable(v)}
    template = get_spec(backbone).template
    write_config(run_dir, "train siamese", arguments, seed=seed)
    keras.utils.set_random_seed(seed)

    # 1. Faces, and identity-disjoint splits with balanced pairs.
    folder = load_face_folder(data, template, aligned=aligned, progress=progress)
    _write_skipped(run_dir, folder)
    rng = np.random.default_rng(seed)
    parts = split_identities(len(folder.identities), split_fractions, rng)
    pairs = {
        split: make_pairs(folder.labels, ids, rng)
        for split, ids in zip(("train", "validation", "test"), parts, strict=True)
    }
    if not len(pairs["train"]) or not pairs["train"][:, 2].any():
        raise AdvfaceError(
            "The training identities have no same-person pair. Give each identity at least 2 photos."
        )
    _write_pairs(run_dir / "pairs.tsv", pairs, folder)

    # 2. Model: one tower, two inputs, cosine similarity, contrastive loss.
    tower = siamese_tower(_backbone(backbone), projection=projection, trainable_backbone=fine_tune, name=name)
    model = siamese_pair_model(tower)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=contrastive_loss(margin))

    def pair_ds(rows, shuffle, jitter):
        x = (folder.chips[rows[:, 0]], folder.chips[rows[:, 1]])
        return _dataset(
            x,
            rows[:, 2].astype(np.float32),
            batch_size,
            augment=augmenter(seed) if jitter else None,
            shuffle_seed=seed if shuffle else None,
        )

    val_ds = pair_ds(pairs["validation"], False, False) if len(pairs["validation"]) else None
    _fit(
        model,
        pair_ds(pairs["train"], True, augment),
        val_ds,
        run_dir=run_dir,
        epochs=epochs,
        progress=progress,
        monitor="val_loss" if val_ds is not None else "loss",
    )

    # 3. Threshold on validation pairs (best accuracy), accuracy on held-out identities.
    best = run_dir / "best.weights.h5"
    if best.is_file():
        model.load_weights(best)
    embeddings = tower.predict(check_images(folder.chips), batch_size=batch_size, verbose=0)

    def distances(rows):
        a, b = embeddings[rows[:, 0]], embeddings[rows[:, 1]]
        return 1.0 - np.sum(a * b, axis=1)

    tune = (
        pairs["validation"]
        if len(pairs["validation"]) and pairs["validation"][:, 2].any()
        else pairs["train"]
    )
    threshold = _best_threshold(distances(tune), tune[:, 2].astype(bool))
    metrics = {"threshold": threshold, "margin": margin}
    for split, rows in pairs.items():
        if len(rows):
            metrics[f"{split}_pair_accuracy"] = float(np.mean((distances(rows) <= threshold) == rows[:, 2]))
    meta = {
        "architecture": "siamese",
        "kind": "embedding",
        "backbone": backbone,
        "projection": projection,
        "template": template,
        "distance": "cosine",
        "threshold": threshold,
        "threshold_note": "best accuracy on the validation pairs (advface train siamese)",
        "labels": list(folder.identities),
        "data": str(Path(data)),
        "description": f"siamese tower on {backbone}, {projection}-d, contrastive margin {margin}",
        "command": f"advface train siamese --data {data} --name {name}",
    }
    # Register the tower (the embedding model); the pair model is the tower applied twice.
    weights = _register(tower, name, meta, run_dir=run_dir)  # best pair weights already loaded
    result = TrainingResult(
        name=name,
        run_dir=run_dir,
        weights=weights,
        epochs=epochs,
        sizes={split: int(len(rows)) for split, rows in pairs.items()} | {"skipped": len(folder.skipped)},
        metrics=metrics,
        labels=folder.identities,
        skipped=folder.skipped,
    )
    _write_summary(run_dir, result)
    return result


def _best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The cut (midpoint between sorted distances) with the best pair accuracy."""
    values = np.sort(np.unique(distances))
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    accuracy = [np.mean((distances <= c) == same) for c in cuts]
    return float(cuts[int(np.argmax(accuracy))])


def _write_pairs(path: Path, pairs: dict, folder: FaceFolder) -> None:
    lines = ["split\ta\tb\tsame"]
    for split, rows in pairs.items():
        lines += [f"{split}\t{folder.paths[a]}\t{folder.paths[b]}\t{s}" for a, b, s in rows]
    path.write_text("\n".join(lines) + "\n")
