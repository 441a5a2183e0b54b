"""Siamese face verification: a shared embedding tower, cosine similarity and the contrastive loss.

The tower maps a face chip to a unit-length embedding; a pair model applies the *same* tower to both
images and outputs their cosine similarity. It is trained with the contrastive loss of Hadsell, Chopra and
LeCun (CVPR 2006) on the cosine distance ``d = 1 - cos``:

    L(y, d) = y * d^2 + (1 - y) * max(0, margin - d)^2        (y = 1 for the same person)

so same-person pairs are pulled together and different-person pairs pushed at least ``margin`` apart.
After training, advface uses the tower alone as an embedding model with the cosine distance, so every
attack and the verification tools take it like any other zoo model.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="advface")
class CosineSimilarity(layers.Layer):
    """Row-wise cosine similarity of two ``(N, D)`` tensors, shape ``(N,)``."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        a, b = inputs
        a = a / ops.sqrt(ops.maximum(ops.sum(a * a, axis=-1, keepdims=True), self.epsilon))
        b = b / ops.sqrt(ops.maximum(ops.sum(b * b, axis=-1, keepdims=True), self.epsilon))
        return ops.sum(a * b, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def contrastive_loss(margin: float = 0.5):
    """The contrastive loss on cosine distance as a Keras loss ``(y_true, cos_similarity) -> (N,)``.

    Args:
        margin: how far apart (in cosine distance, 0..2) different people are pushed; > 0.
    """
    if not margin > 0:
        raise ValueError(f"`margin` must be > 0. Received: margin={margin}.")

    def loss(y_true, similarity):
        y = ops.cast(ops.reshape(y_true, (-1,)), similarity.dtype)
        d = 1.0 - ops.reshape(similarity, (-1,))
        return y * ops.square(d) + (1.0 - y) * ops.square(ops.maximum(margin - d, 0.0))

    loss.__name__ = "contrastive_loss"
    return loss


def siamese_tower(
    backbone: keras.Model,
    *,
    projection: int = 128,
    trainable_backbone: bool = False,
    name: str = "siamese_tower",
) -> keras.Model:
    """The shared tower: ``backbone`` -> Dense(projection) -> unit length.

    Args:
        backbone: a Keras model from chips ``(N, S, S, 3)`` in ``[0, 1]`` to features ``(N, F)`` (a zoo
            embedding model, e.g. ``dlib-resnet``).
        projection: embedding size of the tower; > 0.
        trainable_backbone: fine-tune the backbone too (default: frozen, only the projection trains).

    Returns:
        A model ``(N, S, S, 3)`` in ``[0, 1]`` -> ``(N, projection)`` unit vectors.
    """
    if projection < 1:
        raise ValueError(f"`projection` must be >= 1. Received: projection={projection}.")
    backbone.trainable = trainable_backbone
    inputs = keras.Input(backbone.input_shape[1:], name="chip")
    features = backbone(inputs, training=False) if not trainable_backbone else backbone(inputs)
    x = layers.Dense(projection, name="projection")(features)
    x = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(inputs, x, name=name)


def siamese_pair_model(tower: keras.Model) -> keras.Model:
    """Two chips -> cosine similarity of their tower embeddings (one tower, shared weights)."""
    shape = tower.input_shape[1:]
    a = keras.Input(shape, name="a")
    b = keras.Input(shape, name="b")
    similarity = CosineSimilarity(name="cosine_similarity")([tower(a), tower(b)])
    return keras.Model([a, b], similarity, name="siamese")
