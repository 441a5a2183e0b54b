"""Face generators behind one interface (:class:`LatentGenerator`) and their registry.

=================  ======================================================================================
name               what
=================  ======================================================================================
digiface-dcgan     64x64 DCGAN trained on DigiFace-1M synthetic faces, read from the gan-face-generate
                   1.1.1 wheel (offline default)
stylegan-ffhq      StyleGAN (v1) FFHQ 1024x1024, converted from NVIDIA's pickle or InterFaceGAN's .pth
=================  ======================================================================================

``load_generator(name)`` builds one (once per process); ``advface zoo list`` shows them beside the face
models and ``advface zoo convert stylegan-ffhq FILE`` makes the StyleGAN weights.
"""

from __future__ import annotations

import functools
import importlib

from advface.errors import AdvfaceError, WeightsError
from advface.generators.base import GeneratorSpec, LatentGenerator, Truncation

__all__ = [
    "GENERATORS",
    "GeneratorSpec",
    "LatentGenerator",
    "Truncation",
    "generator_names",
    "get_generator_spec",
    "load_generator",
]

STYLEGAN_FFHQ_MD5 = "5a20ed46ea6494a9e969db2f6b97a88a"


def _lazy(ref: str):
    """``"module:function"`` under :mod:`advface`, imported on use so listing builds nothing."""

    def call(*args, **kwargs):
        module, attr = ref.split(":")
        return getattr(importlib.import_module(f"advface.{module}"), attr)(*args, **kwargs)

    return call


def _available(ref: str):
    return lambda: bool(_lazy(ref)())


def _specs() -> list[GeneratorSpec]:
    return [
        GeneratorSpec(
            name="digiface-dcgan",
            description="DCGAN (Radford et al. 2016), z in R^100 -> 64x64 RGB, from gan-face-generate 1.1.1",
            resolution=64,
            latent_size=100,
            latent_space="z",
            trained_on="DigiFace-1M (Bae et al., WACV 2023): 1.2M synthetic, rendered faces; no real people",
            weights="gan-face-generate 1.1.1 wheel: gan_face_generate/weights.tar (netG_state_dict)",
            licence=(
                "package MIT (c) 2023 Chien Liu; trained on DigiFace-1M, whose data licence restricts use to "
                "non-commercial research"
            ),
            build=_lazy("generators.dcgan:digiface_dcgan"),
            available=_available("generators.dcgan:digiface_available"),
            directions="data/directions/digiface-dcgan",
            install="pip install --no-deps gan-face-generate==1.1.1",
            # The mean dlib HOG box over 200 samples (seed 1): its faces are aligned crops.
            face_box=(0.13, 0.25, 0.86, 0.98),
        ),
        GeneratorSpec(
            name="stylegan-ffhq",
            description="StyleGAN v1 (Karras et al. CVPR 2019) FFHQ 1024x1024, w in R^512, 18 style layers",
            resolution=1024,
            latent_size=512,
            latent_space="w",
            trained_on="FFHQ (70,000 Flickr portraits)",
            weights=(
                "saved-models/stylegan-ffhq.weights.h5, made by `advface zoo convert stylegan-ffhq FILE` "
                "from "
                "karras2019stylegan-ffhq-1024x1024.pkl (md5 5a20ed46...) or InterFaceGAN's stylegan_ffhq.pth"
            ),
            licence="CC BY-NC 4.0 (NVIDIA): non-commercial use only",
            build=_lazy("generators.stylegan:stylegan_ffhq"),
            available=_available("generators.stylegan:stylegan_ffhq_available"),
            convert=_lazy("networks.stylegan_convert:convert_stylegan_ffhq"),
            source="karras2019stylegan-ffhq-1024x1024.pkl (NVIDIA) or stylegan_ffhq.pth (InterFaceGAN)",
            directions="data/directions/stylegan-ffhq",
        ),
    ]


GENERATORS: dict[str, GeneratorSpec] = {spec.name: spec for spec in _specs()}


def generator_names() -> list[str]:
    return list(GENERATORS)


def get_generator_spec(name: str) -> GeneratorSpec:
    """The registry entry ``name``, or an error that lists the known generators."""
    if name not in GENERATORS:
        raise AdvfaceError(
            f"Unknown generator. Received: generator={name!r}. Known: {', '.join(GENERATORS)}."
        )
    return GENERATORS[name]


@functools.lru_cache(maxsize=4)
def load_generator(name: str = "digiface-dcgan") -> LatentGenerator:
    """Build (once per process) and return the generator ``name``."""
    spec = get_generator_spec(name)
    if not spec.available():
        how = (
            f"`advface zoo convert {name} FILE` ({spec.source})"
            if spec.convert
            else f"`{spec.install}` (or `make setup`)"
        )
        raise WeightsError(f"No weights for the generator {name} here ({spec.weights}). Get them with {how}.")
    return spec.build()
