"""Training the eyeglass DCGAN, and finding and sampling the trained generator.

The losses are the original AGN's (Sharif et al.; reference/algorithms.md 1.4 and 5.2), not the source
port's contradictory ones: the discriminator D learns real -> 0.9 (one-sided label smoothing) and
generated -> 0 with a binary cross-entropy on its logit; the generator G learns to make D say 0.9 on its
samples; z ~ U(-1, 1)^25 drawn fresh every step; Adam (beta_1 = 0.5) for both. An epoch is one pass over
the data in a seeded order, so runs end and resume exactly.

A run folder holds ``checkpoints/`` (generator, discriminator, both optimizers, the noise generator and
the epoch: ``kill -9`` loses at most the epoch in progress), ``losses.csv`` (one row per epoch, flushed),
``samples/epoch_NNN.png`` (a fixed set of latents, so epochs can be compared) and ``config.json``.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError, WeightsError
from advface.progress import ProgressCallback, report

GENERATOR = "eyeglass-generator"
DISCRIMINATOR = "eyeglass-discriminator"
_COLUMNS = ["epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds"]


def sample_latents(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 25)`` float32 latents uniform in [-1, 1] (AGN's prior), reproducible from ``seed``."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 25)).astype(np.float32)


def sample_grid(canvases: np.ndarray, columns: int = 6, gap: int = 4) -> np.ndarray:
    """Tile ``(N, 64, 176, 3)`` canvases into one image on black, ``columns`` per row."""
    n, h, w, c = canvases.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + gap) + gap, columns * (w + gap) + gap, c), np.float32)
    for i, canvas in enumerate(canvases):
        r, k = divmod(i, columns)
        grid[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + k * (w + gap) : gap + k * (w + gap) + w] = (
            canvas
        )
    return grid


def _checkout_models() -> Path:
    return Path(__file__).resolve().parents[2] / "saved-models"


def gan_weights(name: str = GENERATOR, weights=None) -> Path:
    """The weights file of the eyeglass GAN part ``name``.

    ``weights`` (a path or a saved-models name) wins; otherwise ``$ADVFACE_MODELS`` / the user's models
    folder, then the weights shipped in the checkout's ``saved-models/``.
    """
    from advface.savedmodels import models_dir, resolve_weights, weights_file

    if weights is not None:
        return resolve_weights(weights)
    for folder in (models_dir(), _checkout_models()):
        path = folder / f"{name}.weights.h5"
        if path.is_file():
            return path
    raise WeightsError(
        f"No {name} weights: {weights_file(name)} does not exist. Train them with "
        "`advface glasses train --data DIR` (make DIR with `advface glasses data --out DIR`)."
    )


def load_generator(weights=None):
    """The trained eyeglass generator (see :func:`gan_weights` for where it is looked up)."""
    from advface.networks.eyeglass_gan import eyeglass_generator

    return eyeglass_generator(weights=gan_weights(GENERATOR, weights))


def load_discriminator(weights=None):
    """The discriminator trained with the generator (the attack keeps training it)."""
    from advface.networks.eyeglass_gan import eyeglass_discriminator

    return eyeglass_discriminator(weights=gan_weights(DISCRIMINATOR, weights))


def generate(generator, latents: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Canvases ``(N, 64, 176, 3)`` in [0, 1] from latents, with the generator in inference mode."""
    out = [
        np.asarray(generator(latents[i : i + batch_size], training=False))
        for i in range(0, len(latents), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class DCGANResult:
    """What :func:`train_dcgan` produced.

    Attributes:
        run_dir: the run folder.
        epochs: epochs completed (including those of earlier, resumed runs).
        history: one dict per epoch (the rows of ``losses.csv``).
        generator: the stored generator weights (None if not stored).
        discriminator: the stored discriminator weights (None if not stored).
        samples: the last sample grid.
    """

    run_dir: Path
    epochs: int
    history: tuple[dict, ...]
    generator: Path | None
    discriminator: Path | None
    samples: Path


def _history(path: Path, upto: int) -> list[dict]:
    """Rows of losses.csv for epochs 1..upto (rows of an epoch the checkpoint does not have are dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= upto]
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]


def _write_history(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _check_resume(run_dir: Path, arguments: dict, seed: int) -> None:
    """Refuse to resume a run with other settings than it was started with (all but ``epochs``)."""
    import json

    config = run_dir / "config.json"
    if not (run_dir / "checkpoints" / "checkpoint").is_file() or not config.is_file():
        return
    try:
        saved = json.loads(config.read_text())
    except ValueError:
        return
    before = {**saved.get("arguments", {}), "seed": saved.get("seed")}
    now = {**arguments, "seed": seed}
    changed = [k for k in now if k != "epochs" and k in before and before[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k}={before[k]!r} (now {now[k]!r})" for k in changed)
        raise AdvfaceError(
            f"{run_dir} was started with other settings: {diff}. Resume with the same settings (only "
            "--epochs may change), or use a new --out folder."
        )


def train_dcgan(
    data,
    run_dir: str | Path,
    *,
    epochs: int = 25,
    batch_size: int = 32,
    learning_rate: float = 2e-4,
    beta_1: float = 0.5,
    real_label: float = 0.9,
    limit: int | None = None,
    seed: int = 0,
    store: bool = True,
    command: str = "advface glasses train",
    progress: ProgressCallback | None = None,
) -> DCGANResult:
    """Train the eyeglass DCGAN on real eyeglass canvases; resume from ``run_dir`` when it has a checkpoint.

    Args:
        data: a folder of eyeglass images (AGN layout or 64x176 canvases; see
            :func:`advface.glasses.textures.load_eyeglasses`) or an array ``(N, 64, 176, 3)`` in [0, 1].
        run_dir: the run folder (created; an existing one is resumed).
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: samples per step for each of real and generated.
        learning_rate, beta_1: Adam settings of both networks.
        real_label: the discriminator's target on real samples (one-sided smoothing); also the
            generator's target, as in AGN.
        limit: use a seeded random subset of this many images.
        seed: order of the data and the noise.
        store: when done, store both networks in saved-models (``eyeglass-generator``,
            ``eyeglass-discriminator``) with the command in MODELS.md.
        command: the command recorded in MODELS.md.
        progress: called once per step.
    """
    import keras
    import tensorflow as tf

    from advface.images import save_image
    from advface.networks.eyeglass_gan import eyeglass_discriminator, eyeglass_generator
    from advface.runs import write_config

    for key, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise AdvfaceError(f"`{key}` must be a positive integer. Received: {key}={value!r}.")
    if not 0.5 < real_label <= 1.0:
        raise AdvfaceError(f"`real_label` must be in (0.5, 1]. Received: real_label={real_label!r}.")
    if isinstance(data, str | Path):
        from advface.glasses.textures import load_eyeglasses

        loaded = load_eyeglasses(data, limit=limit, seed=seed)
        images, source = loaded.images, str(data)
    else:
        images, source = np.asarray(data, np.float32), "array"
        if limit is not None:
            images = images[np.random.default_rng(seed).permutation(len(images))[:limit]]
    if images.ndim != 4 or images.shape[1:] != (64, 176, 3):
        raise AdvfaceError(f"Eyeglass data must be (N, 64, 176, 3). Received: shape={images.shape}.")
    pixels = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)  # 4x less memory than float32
    del images
    steps = len(pixels) // batch_size
    if steps < 1:
        raise AdvfaceError(
            f"Need at least one batch of {batch_size} eyeglass images. Received: {len(pixels)} images."
        )

    run_dir = Path(run_dir)
    arguments = dict(
        data=source,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        beta_1=beta_1,
        real_label=real_label,
        limit=limit,
        images=len(pixels),
    )
    _check_resume(run_dir, arguments, seed)
    write_config(run_dir, "glasses train", arguments, seed=seed)
    generator, discriminator = eyeglass_generator(), eyeglass_discriminator()
    g_opt = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    d_opt = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    noise = tf.random.Generator.from_seed(seed)
    epoch_done = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        generator=generator,
        discriminator=discriminator,
        g_opt=g_opt,
        d_opt=d_opt,
        noise=noise,
        epoch=epoch_done,
    )
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "checkpoints", max_to_keep=2)
    if manager.latest_checkpoint:
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as exc:
            raise WeightsError(
                f"The checkpoint in {run_dir / 'checkpoints'} does not match the eyeglass DCGAN "
                f"({str(exc).splitlines()[0][:120]}). Use a new --out folder."
            ) from None
    start = int(epoch_done.numpy())
    losses_path = run_dir / "losses.csv"
    history = _history(losses_path, start)
    _write_history(losses_path, history)

    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def train_step(real_uint8):
        real = tf.cast(real_uint8, tf.float32) / 255.0
        n = tf.shape(real)[0]
        # 1. Discriminator: real -> real_label, generated -> 0 (fresh z every step).
        z = noise.uniform((n, 25), -1.0, 1.0)
        with tf.GradientTape() as tape:
            fake = generator(z, training=True)
            real_logit = discriminator(real, training=True)
            fake_logit = discriminator(fake, training=True)  # separate batches: minibatch features
            d_loss = bce(tf.fill(tf.shape(real_logit), real_label), real_logit) + bce(
                tf.zeros_like(fake_logit), fake_logit
            )
        d_opt.apply_gradients(
            zip(
                tape.gradient(d_loss, discriminator.trainable_variables),
                discriminator.trainable_variables,
                strict=True,
            )
        )
        # 2. Generator: make the discriminator say real_label on new samples.
        z = noise.uniform((n, 25), -1.0, 1.0)
        with tf.GradientTape() as tape:
            fake_logit = discriminator(generator(z, training=True), training=True)
            g_loss = bce(tf.fill(tf.shape(fake_logit), real_label), fake_logit)
        g_opt.apply_gradients(
            zip(
                tape.gradient(g_loss, generator.trainable_variables),
                generator.trainable_variables,
                strict=True,
            )
        )
        return d_loss, g_loss, tf.reduce_mean(tf.sigmoid(real_logit)), tf.reduce_mean(tf.sigmoid(fake_logit))

    fixed = sample_latents(36, seed=seed)
    samples_dir = run_dir / "samples"
    sample_path = samples_dir / f"epoch_{start:03d}.png"
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(len(pixels))
        sums = np.zeros(4)
        for i in range(steps):
            batch = pixels[order[i * batch_size : (i + 1) * batch_size]]
            values = train_step(tf.constant(batch))
            sums += [float(v) for v in values]
            report(
                progress,
                (epoch - 1) * steps + i + 1,
                epochs * steps,
                "dcgan",
                epoch=epoch,
                d_loss=float(values[0]),
                g_loss=float(values[1]),
            )
        means = sums / steps
        history.append(
            dict(
                epoch=epoch,
                d_loss=means[0],
                g_loss=means[1],
                d_real=means[2],
                d_fake=means[3],
                seconds=time.perf_counter() - t0,
            )
        )
        sample_path = save_image(
            samples_dir / f"epoch_{epoch:03d}.png", sample_grid(generate(generator, fixed))
        )
        # The row first: a kill before the checkpoint repeats this epoch, and its row is dropped on resume.
        _write_history(losses_path, history)
        epoch_done.assign(epoch)
        manager.save(checkpoint_number=epoch)

    stored_g = stored_d = None
    if store:
        from advface.savedmodels import store as store_model

        meta = dict(
            gan="agn-eyeglass-dcgan",
            epochs=int(epoch_done.numpy()),
            images=len(pixels),
            data=source,
            batch_size=batch_size,
            learning_rate=learning_rate,
            beta_1=beta_1,
            real_label=real_label,
            seed=seed,
            command=command,
        )
        stored_g, _ = store_model(
            generator, GENERATOR, origin="trained by advface", command=command, meta=meta
        )
        stored_d, _ = store_model(
            discriminator, DISCRIMINATOR, origin="trained by advface", command=command, meta=meta
        )
    if not sample_path.is_file():
        sample_path = save_image(sample_path, sample_grid(generate(generator, fixed)))
    return DCGANResult(run_dir, int(epoch_done.numpy()), tuple(history), stored_g, stored_d, sample_path)
