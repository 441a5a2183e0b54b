"""Adversarial generative nets: eyeglass frames that make face recognition miss or mistake the wearer.

Sharif, Bhagavatula, Bauer, Reiter, "A General Framework for Adversarial Examples with Objectives", ACM
TOPS 2019 (AGN). A generator of eyeglass frames, pre-trained as a DCGAN on real frames, is fine-tuned so
that the frames it produces, worn by the attacker, meet the attack's goal on every photo of the attacker,
while its discriminator, trained alongside, keeps them looking like eyeglasses.

One attack step (the original's semantics; reference/algorithms.md 1.6 and 5.2 list what the Keras port
got wrong):

1. the discriminator takes one Adam step on real frames (label 0.9) against fresh generated ones (0);
2. the generator makes a batch from fresh ``z ~ U(-1, 1)^25``; each sample is put on one of the
   attacker's photos (all photos are covered when the batch is at least as large) through the placement
   (the template pose, or the homography fitted to printed marks) and fed to the face model in
   **inference mode** (its weights and batch-norm statistics never change);
3. per sample, the gradient of the realism loss (make D say 0.9) and of the goal loss with respect to the
   generated image are joined: the larger one is rescaled to the smaller one's norm, then
   ``kappa * realism + (1 - kappa) * goal``;
4. the joined image gradients are back-propagated through the generator and applied with **one** Adam
   step (plus the original's L2 weight decay).

Every ``check_every`` steps ``check_samples`` fresh frames are drawn; each is rounded to 8 bits (as it will
be saved and printed), put on every photo through the same placement, and judged. The attack succeeds
when one frame meets the goal on at least ``success_fraction`` of the photos, and stops there or after
``steps``. The generator stays in inference mode throughout (its batch-norm uses the statistics learned in
pre-training), so the frames the check sees come from the network that was trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from advface.attacks.base import Goal, check_goal, goal_loss, goal_threshold, judge
from advface.errors import AdvfaceError
from advface.progress import ProgressCallback, report

DCGAN_BATCH = 32
"""The batch size the shipped eyeglass DCGAN was trained with; the attack's discriminator batches match it."""


@dataclass(frozen=True)
class EyeglassStep:
    """Metrics of one attack step (a row of the run's ``steps.tsv``).

    Attributes:
        step: 1-based step number.
        goal_loss: mean goal loss of the step's batch (lower is closer to the goal).
        realism: mean discriminator probability that the batch's frames are real.
        d_loss: the discriminator's loss.
        checked: whether the success check ran after this step.
        best_fraction: best share of photos on which one checked frame met the goal (so far).
        best_score: mean score of that frame over the photos (distance, or probability of the goal's class).
    """

    step: int
    goal_loss: float
    realism: float
    d_loss: float
    checked: bool
    best_fraction: float
    best_score: float


@dataclass(frozen=True)
class EyeglassResult:
    """The outcome of an :class:`EyeglassAttack`.

    Attributes:
        success: a frame met the goal on at least ``success_fraction`` of the photos.
        steps: attack steps run.
        seconds: wall time.
        glasses: the best frame found, ``(64, 176, 3)`` float32 in [0, 1], rounded to 8 bits.
        latent: its ``(25,)`` latent (for the fine-tuned generator).
        images: the photos wearing it, ``(N, S, S, 3)`` in [0, 1], rounded to 8 bits.
        success_per_image: ``(N,)`` bool, re-judged on ``images`` with a fresh forward pass.
        scores_before: ``(N,)`` distance to the nearest reference/target or probability of the goal's
            class, without glasses.
        scores_after: the same with the glasses.
        threshold: the verification threshold (embedding goals), else None.
        history: one :class:`EyeglassStep` per step.
        generator: the fine-tuned generator as it was when the best frame was found (``latent`` draws it).
    """

    success: bool
    steps: int
    seconds: float
    glasses: np.ndarray = field(repr=False)
    latent: np.ndarray = field(repr=False)
    images: np.ndarray = field(repr=False)
    success_per_image: np.ndarray
    scores_before: np.ndarray
    scores_after: np.ndarray
    threshold: float | None
    history: tuple[EyeglassStep, ...] = field(repr=False)
    generator: object = field(repr=False, compare=False)


def join_gradients(realism, goal, kappa: float):
    """AGN's per-sample joining of two image gradients ``(B, ...)``: rescale, per sample, the one with the
    larger L2 norm to the smaller's norm, then ``kappa * realism + (1 - kappa) * goal``."""
    import tensorflow as tf

    axes = list(range(1, len(realism.shape)))
    n_r = tf.norm(tf.reshape(realism, (tf.shape(realism)[0], -1)), axis=1)
    n_g = tf.norm(tf.reshape(goal, (tf.shape(goal)[0], -1)), axis=1)
    smaller = tf.minimum(n_r, n_g)
    shape = tf.concat([tf.shape(n_r), tf.ones([len(axes)], tf.int32)], 0)
    scale_r = tf.reshape(tf.math.divide_no_nan(smaller, n_r), shape)
    scale_g = tf.reshape(tf.math.divide_no_nan(smaller, n_g), shape)
    return kappa * realism * scale_r + (1.0 - kappa) * goal * scale_g


class EyeglassAttack:
    """Fine-tune the eyeglass generator until the frames it makes meet a goal on all photos of a person.

    Args:
        steps: most attack steps.
        learning_rate: Adam learning rate of the generator.
        discriminator_learning_rate: Adam learning rate of the discriminator.
        kappa: weight of realism against the goal in ``[0, 1]`` (0: only the goal).
        batch_size: frames per step (each worn on one photo).
        check_every: steps between success checks (a check also runs after the last step).
        check_samples: fresh frames drawn per check.
        success_fraction: share of photos a frame must fool (1.0: all).
        beta_1: Adam's beta_1 (0.5, as in AGN).
        weight_decay: L2 weight decay added to the generator's gradients (AGN: 5e-5).
        generator: the pre-trained generator (a Keras model, a ``.weights.h5`` path or None for the one in
            saved-models); it is copied, so the caller's model is not changed.
        discriminator: its discriminator (same choices).
        real_glasses: real frames ``(M, 64, 176, 3)`` in [0, 1] or a folder of them for the
            discriminator; None renders 1,000 procedural frames (as the original drew 1,000 real ones).

    Example:
        >>> attack = EyeglassAttack(steps=300)
        >>> result = attack(load_model("dlib-resnet"), chips, Dodge(model.embed(chips)), seed=0)
    """

    def __init__(
        self,
        *,
        steps: int = 300,
        learning_rate: float = 5e-4,
        discriminator_learning_rate: float = 2e-4,
        kappa: float = 0.25,
        batch_size: int = 16,
        check_every: int = 5,
        check_samples: int = 16,
        success_fraction: float = 1.0,
        beta_1: float = 0.5,
        weight_decay: float = 5e-5,
        generator=None,
        discriminator=None,
        real_glasses=None,
    ):
        for key, value in (
            ("steps", steps),
            ("batch_size", batch_size),
            ("check_every", check_every),
            ("check_samples", check_samples),
        ):
            if not isinstance(value, int) or value < 1:
                raise AdvfaceError(f"`{key}` must be a positive integer. Received: {key}={value!r}.")
        if not 0.0 <= kappa <= 1.0:
            raise AdvfaceError(f"`kappa` must be in [0, 1]. Received: kappa={kappa!r}.")
        if not 0.0 < success_fraction <= 1.0:
            raise AdvfaceError(
                f"`success_fraction` must be in (0, 1]. Received: success_fraction={success_fraction!r}."
            )
        for key, value in (
            ("learning_rate", learning_rate),
            ("discriminator_learning_rate", discriminator_learning_rate),
        ):
            if not value > 0:
                raise AdvfaceError(f"`{key}` must be positive. Received: {key}={value!r}.")
        self.steps = steps
        self.learning_rate = learning_rate
        self.discriminator_learning_rate = discriminator_learning_rate
        self.kappa = float(kappa)
        self.batch_size = batch_size
        self.check_every = check_every
        self.check_samples = check_samples
        self.success_fraction = float(success_fraction)
        self.beta_1 = beta_1
        self.weight_decay = weight_decay
        self.generator = generator
        self.discriminator = discriminator
        self.real_glasses = real_glasses

    # -- set-up -------------------------------------------------------------------------------------------
    def _networks(self):
        """Fresh copies of the generator and discriminator (the caller's models are never changed)."""
        import keras

        from advface.glasses.dcgan import load_discriminator, load_generator

        def copy(net, loader):
            if net is None or not isinstance(net, keras.Model):
                return loader(net)
            clone = keras.models.clone_model(net)
            clone.set_weights(net.get_weights())
            return clone

        return copy(self.generator, load_generator), copy(self.discriminator, load_discriminator)

    def _real(self, seed: int) -> np.ndarray:
        if self.real_glasses is None:
            from advface.glasses.textures import render_eyeglasses

            return render_eyeglasses(1000, seed=seed)
        if isinstance(self.real_glasses, np.ndarray):
            real = self.real_glasses.astype(np.float32)
        else:
            from advface.glasses.textures import load_eyeglasses

            real = load_eyeglasses(self.real_glasses, limit=1000, seed=seed).images
        if real.ndim != 4 or real.shape[1:] != (64, 176, 3):
            raise AdvfaceError(f"`real_glasses` must be (M, 64, 176, 3). Received: shape={real.shape}.")
        if not len(real) or real.min() < 0 or real.max() > 1:
            raise AdvfaceError(
                "`real_glasses` must be float frames in [0, 1] (divide 8-bit images by 255). Received: "
                f"range {real.min() if len(real) else None}..{real.max() if len(real) else None}."
            )
        return real

    # -- the attack ---------------------------------------------------------------------------------------
    def __call__(
        self,
        model,
        images,
        goal: Goal,
        *,
        placement=None,
        progress: ProgressCallback | None = None,
        seed: int | None = None,
    ) -> EyeglassResult:
        """Run the attack.

        Args:
            model: a zoo ``FaceModel`` (embedding model or classifier).
            images: the attacker's aligned chips ``(N, S, S, 3)`` in [0, 1] for ``model``'s template.
            goal: ``Dodge``/``Impersonate`` (embedding models) or ``Misclassify``/``TargetClass``.
            placement: where the frames go on each photo (``advface.glasses.geometry.Placement``); default
                the template pose (digital attack). A physical placement (fitted to printed marks) is used
                in the steps and in the success check alike.
            progress: called once per step (stage ``"eyeglasses"``, metrics: the step's
                :class:`EyeglassStep` fields; after a check also the best frame so far for a live view:
                ``glasses`` ``(64, 176, 3)``, ``worn`` ``(N, S, S, 3)`` (the photos wearing it, 8-bit),
                ``scores`` and ``fooled`` ``(N,)``); may raise ``Cancelled``.
            seed: seeds the latents, the batches and the procedural real frames.
        """
        import keras
        import tensorflow as tf

        from advface.glasses.geometry import GlassesRenderer, Placement
        from advface.images import check_images

        check_goal(goal, model)
        size = model.input_size
        faces = check_images(images, size=(size, size))
        n = len(faces)
        placement = placement or Placement.digital(model.template.name, n)
        if len(placement) != n or tuple(placement.size) != (size, size):
            raise AdvfaceError(
                f"The placement must have one matrix per photo for {size}x{size} chips. Received: "
                f"{len(placement)} matrices for {placement.size}, {n} photos."
            )
        seed = 0 if seed is None else int(seed)
        keras.utils.set_random_seed(seed)
        generator, discriminator = self._networks()
        renderer = GlassesRenderer(placement)
        # In pieces: one 135 MB copy into a tensor holds Python's GIL (the launcher's window) for 0.1-0.3 s.
        real = tf.concat([tf.constant(part) for part in np.array_split(self._real(seed), 16)], axis=0)
        faces_t = tf.constant(faces)
        noise = tf.random.Generator.from_seed(seed)
        g_opt = keras.optimizers.Adam(self.learning_rate, beta_1=self.beta_1)
        d_opt = keras.optimizers.Adam(self.discriminator_learning_rate, beta_1=self.beta_1)
        g_vars, d_vars = generator.trainable_variables, discriminator.trainable_variables
        g_opt.build(g_vars)
        d_opt.build(d_vars)
        bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
        h, kappa, decay = self.batch_size, self.kappa, self.weight_decay
        # The discriminator's minibatch features are sums over its batch: it judges batches of the size
        # it was trained on (or larger), padded with extra fresh frames that carry no goal loss.
        m = max(h, DCGAN_BATCH)
        real_label = 0.9

        @tf.function
        def attack_step():
            # 1. Discriminator: real frames -> 0.9, fresh generated frames -> 0.
            pick = noise.uniform((m,), 0, tf.shape(real)[0], dtype=tf.int32)
            fake = generator(noise.uniform((m, 25), -1.0, 1.0), training=False)
            with tf.GradientTape() as tape:
                real_logit = discriminator(tf.gather(real, pick), training=True)
                fake_logit = discriminator(fake, training=True)
                d_loss = tf.reduce_mean(
                    bce(tf.fill(tf.shape(real_logit), real_label), real_logit)
                ) + tf.reduce_mean(bce(tf.zeros_like(fake_logit), fake_logit))
            d_opt.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars, strict=True))
            # 2. Generator output for fresh z; the first h frames are each worn on one photo (all photos
            #    when h >= n); the discriminator sees all m, in training mode as when the GAN was trained.
            z = noise.uniform((m, 25), -1.0, 1.0)
            offset = noise.uniform((), 0, n, dtype=tf.int32)
            which = tf.math.floormod(tf.range(h) + offset, n)
            with tf.GradientTape() as g_tape:
                glasses = generator(z, training=False)
            with tf.GradientTape(persistent=True) as image_tape:
                image_tape.watch(glasses)
                logit = discriminator(glasses, training=True)[:h]
                realism_loss = bce(tf.fill(tf.shape(logit), real_label), logit)
                worn = glasses[:h]
                outputs = model(renderer(worn, tf.gather(faces_t, which), which))
                face_loss = goal_loss(goal, model, outputs)
            # 3. Per-sample joining of the two gradients on the generated image.
            d_realism = image_tape.gradient(realism_loss, glasses)[:h]
            d_goal = image_tape.gradient(face_loss, glasses)[:h]
            del image_tape
            joined = join_gradients(d_realism, d_goal, kappa)
            joined = tf.concat([joined, tf.zeros_like(glasses[h:])], axis=0)
            # 4. Back through the generator, weight decay, one Adam step.
            grads = g_tape.gradient(glasses, g_vars, output_gradients=joined)
            grads = [g + decay * v for g, v in zip(grads, g_vars, strict=True)]
            g_opt.apply_gradients(zip(grads, g_vars, strict=True))
            return tf.reduce_mean(face_loss), tf.reduce_mean(tf.sigmoid(logit)), d_loss

        check_z = np.random.default_rng([seed, 1])
        start = time.perf_counter()
        best = dict(
            fraction=-1.0, score=np.inf, latent=None, canvas=None, weights=None, objective=float("nan")
        )
        history: list[EyeglassStep] = []
        success, step = False, 0
        for step in range(1, self.steps + 1):
            g_loss, realism, d_loss = (float(v) for v in attack_step())
            checked = step % self.check_every == 0 or step == self.steps
            if checked:
                latents = check_z.uniform(-1.0, 1.0, (self.check_samples, 25)).astype(np.float32)
                found = self._check(model, goal, generator, renderer, faces, latents)
                if found["key"] > (best["fraction"], -best["score"]):
                    # Keep the frame judged here and the generator that drew it: later steps may be worse.
                    best = dict(found, weights=generator.get_weights())
                success = best["fraction"] >= self.success_fraction
            record = EyeglassStep(
                step, g_loss, realism, d_loss, checked, max(best["fraction"], 0.0), best["objective"]
            )
            history.append(record)
            live = {k: best[k] for k in ("worn", "scores", "fooled")} if checked else {}
            if checked:
                live["glasses"] = best["canvas"]
            report(
                progress,
                step,
                self.steps,
                "eyeglasses",
                **{k: v for k, v in vars(record).items() if k != "step"},
                **live,
            )
            if success:
                break
        return self._result(
            model, goal, generator, renderer, faces, best, success, step, history, time.perf_counter() - start
        )

    def _wear(self, renderer, faces, canvases_per_photo):
        """Photos ``(N, ...)`` wearing one 8-bit canvas each (``(N, 64, 176, 3)``), as numpy in [0, 1]."""
        canvases = np.round(np.clip(canvases_per_photo, 0, 1) * 255) / 255
        which = np.arange(len(faces))
        return np.asarray(renderer(canvases.astype(np.float32), faces, which))

    def _check(self, model, goal, generator, renderer, faces, latents) -> dict:
        """Judge ``K`` fresh frames on all ``N`` photos; the best frame's share of fooled photos."""
        from advface.glasses.dcgan import generate

        canvases = generate(generator, latents)
        n, k = len(faces), len(latents)
        worn = np.concatenate([self._wear(renderer, faces, np.repeat(c[None], n, 0)) for c in canvases])
        worn = np.round(worn * 255) / 255
        outputs = model.embed(worn.astype(np.float32))
        verdict = judge(goal, model, outputs)
        success = verdict.success.reshape(k, n)
        loss = np.asarray(goal_loss(goal, model, outputs)).reshape(k, n).mean(axis=1)
        fraction = success.mean(axis=1)
        # Best frame: most photos fooled, then the lowest goal loss.
        i = max(range(k), key=lambda j: (fraction[j], -loss[j]))
        return dict(
            worn=worn[i * n : (i + 1) * n].astype(np.float32),
            scores=np.asarray(verdict.score).reshape(k, n)[i].copy(),
            fooled=success[i].copy(),
            canvas=np.round(canvases[i] * 255) / 255,
            key=(fraction[i], -loss[i]),
            fraction=float(fraction[i]),
            score=float(loss[i]),
            latent=latents[i],
            objective=float(verdict.score.reshape(k, n)[i].mean()),
        )

    def _result(self, model, goal, generator, renderer, faces, best, success, steps, history, seconds):
        canvas = best["canvas"]  # the frame the check judged (8-bit), not a redraw by a later generator
        generator.set_weights(best["weights"])  # so that ``latent`` draws that frame again
        worn = np.round(self._wear(renderer, faces, np.repeat(canvas[None], len(faces), 0)) * 255) / 255
        worn = worn.astype(np.float32)
        after = judge(goal, model, model.embed(worn))  # a fresh forward pass on the 8-bit images
        before = judge(goal, model, model.embed(faces))
        return EyeglassResult(
            success=bool(after.success.mean() >= self.success_fraction),
            steps=steps,
            seconds=seconds,
            glasses=canvas.astype(np.float32),
            latent=best["latent"],
            images=worn,
            success_per_image=after.success,
            scores_before=before.score,
            scores_after=after.score,
            threshold=goal_threshold(goal, model),
            history=tuple(history),
            generator=generator,
        )
