"""StyleGAN files written the way their authors wrote them, from random weights of a small configuration.

* :func:`write_official_pickle`: NVIDIA's ``pickle.dump((G, D, Gs), f, protocol=pickle.HIGHEST_PROTOCOL)``
  (protocol 4 under the Python 3.6 of the TF1 era) of ``dnnlib.tflib.network.Network`` objects, whose
  ``__getstate__`` is the official state dict, and numpy arrays as numpy 1.x pickled them
  (``numpy.core.multiarray._reconstruct`` + BUILD, ``numpy.core.multiarray.scalar`` for the ``lod``
  scalars that ``tf.Session.run`` returned). The official module names are put into ``sys.modules`` only
  while pickling.
* :func:`write_interfacegan_pth`: InterFaceGAN's ``StyleGANGeneratorModel`` state dict as its
  ``convert_tf_model`` made it (dense weights ``permute(1, 0)``, conv weights ``permute(3, 2, 0, 1)``,
  fused upsampling kernels kept as TF ``[k, k, in, out]``, noise and blur-kernel buffers, no
  ``truncation.truncation``), saved with ``torch.save``. The keys follow InterFaceGAN's module tree
  (``mapping.dense{i}``, ``truncation``, ``synthesis.layer{i}`` / ``output{j}`` / ``lod``), written here
  from that tree, independently of ``advface.networks.stylegan_convert.interfacegan_table``.
* :func:`pickle_globals`: the globals a pickle names, found with :mod:`pickletools` (nothing is loaded).
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import pickletools
import sys
import types
from pathlib import Path

import numpy as np

TINY = {
    "resolution": 32,
    "latent_size": 32,
    "dlatent_size": 32,
    "mapping_fmaps": 32,
    "fmap_base": 256,
    "fmap_max": 64,
}

OFFICIAL_GLOBALS = {
    ("dnnlib.tflib.network", "Network"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

# The start of training/networks_stylegan.py as the pickle stores it (build_module_src): source text that
# the official loader exec()s and that a safe reader must never run.
BUILD_MODULE_SRC = '''\
# Copyright (c) 2019, NVIDIA CORPORATION. All rights reserved.
"""Network architectures used in the StyleGAN paper."""

import numpy as np
import dnnlib
import dnnlib.tflib as tflib

def G_style(latents_in, labels_in, truncation_psi=0.7, truncation_cutoff=8, **kwargs):
    raise NotImplementedError("template graph only")

def G_mapping(latents_in, labels_in, latent_size=512, dlatent_size=512, mapping_layers=8, **_kwargs):
    raise NotImplementedError("template graph only")

def G_synthesis(dlatents_in, dlatent_size=512, num_channels=3, resolution=1024, **_kwargs):
    raise NotImplementedError("template graph only")
'''


def _nf(stage: int, fmap_base: int, fmap_max: int) -> int:
    return min(int(fmap_base / 2.0**stage), fmap_max)


def official_networks(
    seed: int = 0,
    *,
    resolution: int = 32,
    latent_size: int = 32,
    dlatent_size: int = 32,
    mapping_layers: int = 8,
    mapping_fmaps: int = 32,
    fmap_base: int = 256,
    fmap_max: int = 64,
    num_channels: int = 3,
) -> dict[str, dict[str, np.ndarray]]:
    """The variables of ``Gs`` and its two components, each in the official creation order:
    ``{"Gs": {...}, "mapping": {...}, "synthesis": {...}}`` (TF layouts; ``lod`` as ``np.float32``)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, std=1.0):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    log2 = int(np.log2(resolution))
    synthesis: dict[str, np.ndarray] = {"lod": np.float32(0.0)}
    for layer in range(2 * log2 - 2):
        size = 2 ** (layer // 2 + 2)
        synthesis[f"noise{layer}"] = normal(1, 1, size, size)

    def epilogue(scope, channels):
        synthesis[f"{scope}/Noise/weight"] = normal(channels, std=0.1)
        synthesis[f"{scope}/bias"] = normal(channels, std=0.1)
        synthesis[f"{scope}/StyleMod/weight"] = normal(dlatent_size, 2 * channels)
        synthesis[f"{scope}/StyleMod/bias"] = normal(2 * channels, std=0.1)

    def torgb(res, channels):
        synthesis[f"ToRGB_lod{log2 - res}/weight"] = normal(1, 1, channels, num_channels)
        synthesis[f"ToRGB_lod{log2 - res}/bias"] = normal(num_channels, std=0.1)

    c = _nf(1, fmap_base, fmap_max)
    synthesis["4x4/Const/const"] = normal(1, c, 4, 4)
    epilogue("4x4/Const", c)
    synthesis["4x4/Conv/weight"] = normal(3, 3, c, c)
    epilogue("4x4/Conv", c)
    torgb(2, c)  # the template graph is the "linear" structure: ToRGB after each resolution
    for res in range(3, log2 + 1):
        c_in, c = c, _nf(res - 1, fmap_base, fmap_max)
        scope = f"{2**res}x{2**res}"
        synthesis[f"{scope}/Conv0_up/weight"] = normal(3, 3, c_in, c)
        epilogue(f"{scope}/Conv0_up", c)
        synthesis[f"{scope}/Conv1/weight"] = normal(3, 3, c, c)
        epilogue(f"{scope}/Conv1", c)
        torgb(res, c)

    mapping: dict[str, np.ndarray] = {}
    fan_in = latent_size
    for i in range(mapping_layers):
        width = dlatent_size if i == mapping_layers - 1 else mapping_fmaps
        mapping[f"Dense{i}/weight"] = normal(fan_in, width)
        mapping[f"Dense{i}/bias"] = normal(width, std=0.1)
        fan_in = width
    gs = {"lod": np.float32(0.0), "dlatent_avg": normal(dlatent_size, std=0.5)}
    return {"Gs": gs, "mapping": mapping, "synthesis": synthesis}


def flat(networks: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The official naming: Gs's own variables bare, the components' as ``"<component>/<name>"``."""
    out = {name: np.asarray(value) for name, value in networks["Gs"].items()}
    for component in ("mapping", "synthesis"):
        out.update((f"{component}/{n}", np.asarray(v)) for n, v in networks[component].items())
    return out


# ---------------------------------------------------------------------------------------------------------
# NVIDIA's pickle


class Network:
    """Pickles as ``dnnlib.tflib.network.Network`` with the state the official ``__getstate__`` returns."""

    def __init__(self, name, func, variables, *, static_kwargs=None, components=None, src=BUILD_MODULE_SRC):
        self._state = {
            "version": 3,
            "name": name,
            "static_kwargs": dict(static_kwargs or {}),
            "components": dict(components or {}),
            "build_module_src": src,
            "build_func_name": func,
            "variables": list(variables.items()),
        }

    def __getstate__(self):
        return self._state


def _reconstruct(*args):  # only its name is pickled
    raise AssertionError


def _scalar(*args):  # only its name is pickled
    raise AssertionError


@contextlib.contextmanager
def _official_names(module: str = "dnnlib.tflib.network"):
    """``Network`` as ``<module>.Network`` and numpy 1.x's ``numpy.core.multiarray``, while pickling."""
    parts = module.split(".")
    fakes = {".".join(parts[: i + 1]): types.ModuleType(".".join(parts[: i + 1])) for i in range(len(parts))}
    fakes[module].Network = Network
    multiarray = fakes["numpy.core.multiarray"] = types.ModuleType("numpy.core.multiarray")
    multiarray._reconstruct, multiarray.scalar = _reconstruct, _scalar
    saved = {name: sys.modules.get(name) for name in fakes}
    Network.__module__, _reconstruct.__module__, _scalar.__module__ = module, *["numpy.core.multiarray"] * 2
    _reconstruct.__qualname__, _scalar.__qualname__ = "_reconstruct", "scalar"
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class _Numpy1Pickler(pickle.Pickler):
    """Writes arrays and numpy scalars with numpy 1.x's recipes (numpy 2 names its module ``_core``)."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            data = obj.ravel().tolist() if obj.dtype == object else np.ascontiguousarray(obj).tobytes()
            return _reconstruct, (np.ndarray, (0,), b"b"), (1, obj.shape, obj.dtype, False, data)
        if isinstance(obj, np.generic):
            return _scalar, (obj.dtype, obj.tobytes())
        return NotImplemented


def official_objects(
    networks, *, static_kwargs=None, src=BUILD_MODULE_SRC, func="G_style", extra_gs_kwargs=None
) -> tuple[Network, Network, Network]:
    """``(G, D, Gs)``: G holds other values than Gs (Gs is the running average), D a few variables."""
    kwargs = {"num_channels": 3, "resolution": TINY["resolution"], "label_size": 0}
    kwargs.update(static_kwargs if static_kwargs is not None else {k: v for k, v in TINY.items()})
    num_layers = len([n for n in networks["synthesis"] if n.startswith("noise")])

    def generator(name, shift):
        moved = {
            k: {n: v if v.dtype == object else v + shift for n, v in d.items()} for k, d in networks.items()
        }
        components = {
            "synthesis": Network(
                "G_synthesis", "G_synthesis", moved["synthesis"], static_kwargs=kwargs, src=src
            ),
            "mapping": Network(
                "G_mapping",
                "G_mapping",
                moved["mapping"],
                static_kwargs={**kwargs, "dlatent_broadcast": num_layers},
                src=src,
            ),
        }
        own = {**kwargs, **(extra_gs_kwargs or {})} if name == "Gs" else kwargs
        return Network(name, func, moved["Gs"], static_kwargs=own, components=components, src=src)

    rng = np.random.default_rng(1)
    d = Network(
        "D",
        "D_basic",
        {
            "FromRGB_lod0/weight": rng.standard_normal((1, 1, 3, 16)).astype(np.float32),
            "FromRGB_lod0/bias": np.zeros(16, np.float32),
            "4x4/Dense1/weight": rng.standard_normal((64, 1)).astype(np.float32),
        },
        static_kwargs=kwargs,
        src=src,
    )
    return generator("G", np.float32(1.0)), d, generator("Gs", np.float32(0.0))


def write_pickle(
    obj, path: Path, *, network_module: str = "dnnlib.tflib.network", protocol: int = 4, pickler=None
) -> Path:
    """``pickle.dump(obj)`` with the official class and numpy names; protocol 4 as NVIDIA wrote it (2 stores
    bytes as ``_codecs.encode(text, "latin1")``). ``pickler``: a :class:`_Numpy1Pickler` subclass."""
    with _official_names(network_module), open(path, "wb") as f:
        (pickler or _Numpy1Pickler)(f, protocol=protocol).dump(obj)
    return Path(path)


def write_official_pickle(path: Path, networks, *, protocol: int = 4, **kwargs) -> Path:
    """NVIDIA's file: ``(G, D, Gs)`` of :func:`official_objects`."""
    return write_pickle(official_objects(networks, **kwargs), path, protocol=protocol)


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every ``(module, name)`` a pickle names (GLOBAL and protocol-4 STACK_GLOBAL), by reading opcodes.

    The strings STACK_GLOBAL takes may come from the memo: stored by PUT/BINPUT/LONG_BINPUT (protocols
    0-3, explicit index) or MEMOIZE (protocol 4, next index), fetched by GET/BINGET/LONG_BINGET.
    """
    found, memo, strings = set(), {}, []
    top = None  # the last string pushed (or fetched from the memo), for the memo opcodes
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            top = arg
            strings.append(arg)
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            top = memo[int(arg)]
            strings.append(top)
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = top
        elif op.name == "MEMOIZE":
            memo[len(memo)] = top
        elif op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
        elif op.name != "FRAME":
            top = None
    return found


# ---------------------------------------------------------------------------------------------------------
# InterFaceGAN's .pth


def interfacegan_keys(
    resolution: int, mapping_layers: int = 8, fused_scale="auto"
) -> dict[str, tuple[str, str]]:
    """InterFaceGAN's state-dict keys, from its module tree, each to ``(official name, how it was stored)``
    where ``how`` is ``"T"`` (``permute(1, 0)``), ``"conv"`` (``permute(3, 2, 0, 1)``), ``"as-is"``,
    or ``"blur"`` (a constant blur-kernel buffer, no official variable)."""
    keys: dict[str, tuple[str, str]] = {}
    for i in range(mapping_layers):  # MappingModule: 'normalize' then dense0..dense7
        keys[f"mapping.dense{i}.linear.weight"] = (f"mapping/Dense{i}/weight", "T")
        keys[f"mapping.dense{i}.wscale.bias"] = (f"mapping/Dense{i}/bias", "as-is")
    keys["truncation.w_avg"] = ("dlatent_avg", "as-is")

    def epilogue(module, index, scope):
        keys[f"{module}.epilogue.apply_noise.weight"] = (f"synthesis/{scope}/Noise/weight", "as-is")
        keys[f"{module}.epilogue.apply_noise.noise"] = (f"synthesis/noise{index}", "as-is")
        keys[f"{module}.epilogue.bias"] = (f"synthesis/{scope}/bias", "as-is")
        keys[f"{module}.epilogue.style_mod.dense.linear.weight"] = (f"synthesis/{scope}/StyleMod/weight", "T")
        keys[f"{module}.epilogue.style_mod.dense.wscale.bias"] = (f"synthesis/{scope}/StyleMod/bias", "as-is")

    log2 = int(np.log2(resolution))
    for block in range(1, log2):  # SynthesisModule: block b works at 2^(b+1)
        res = 2 ** (block + 1)
        first, second = f"synthesis.layer{2 * block - 2}", f"synthesis.layer{2 * block - 1}"
        if block == 1:  # FirstConvBlock, then ConvBlock, at 4x4
            keys[f"{first}.first_layer"] = ("synthesis/4x4/Const/const", "as-is")
            epilogue(first, 0, "4x4/Const")
            keys[f"{second}.conv.weight"] = ("synthesis/4x4/Conv/weight", "conv")
            epilogue(second, 1, "4x4/Conv")
        else:  # UpConvBlock (fused: a raw TF kernel named 'weight'), then ConvBlock
            fused = fused_scale is True or (fused_scale == "auto" and res >= 128)
            up = f"synthesis/{res}x{res}/Conv0_up/weight"
            keys[f"{first}.weight" if fused else f"{first}.conv.weight"] = (up, "as-is" if fused else "conv")
            keys[f"{first}.blur.kernel"] = ("", "blur")
            epilogue(first, 2 * block - 2, f"{res}x{res}/Conv0_up")
            keys[f"{second}.conv.weight"] = (f"synthesis/{res}x{res}/Conv1/weight", "conv")
            epilogue(second, 2 * block - 1, f"{res}x{res}/Conv1")
        keys[f"synthesis.output{block - 1}.conv.weight"] = (
            f"synthesis/ToRGB_lod{log2 - block - 1}/weight",
            "conv",
        )
        keys[f"synthesis.output{block - 1}.bias"] = (f"synthesis/ToRGB_lod{log2 - block - 1}/bias", "as-is")
    keys["synthesis.lod"] = ("synthesis/lod", "as-is")  # the synthesis lod overwrote Gs's in their dict
    return keys


def interfacegan_state(arrays: dict[str, np.ndarray], *, fused_scale="auto", truncation=None):
    """The state dict InterFaceGAN saved for these official ``arrays`` (torch tensors, views as saved).

    ``truncation``: ``(psi, layers)`` to keep a ``truncation.truncation`` buffer (their converter drops it).
    """
    import torch

    resolution = max(a.shape[-1] for n, a in arrays.items() if n.startswith("synthesis/noise"))
    mapping_layers = len([n for n in arrays if n.startswith("mapping/") and n.endswith("/bias")])
    state = {}
    for key, (name, how) in interfacegan_keys(resolution, mapping_layers, fused_scale).items():
        if how == "blur":
            channels = arrays[f"synthesis/{_up_scope(key, resolution)}/bias"].shape[0]
            kernel = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16
            state[key] = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(kernel, (channels, 1, 3, 3))))
            continue
        tensor = torch.from_numpy(np.array(arrays[name], dtype=np.float32))
        if how == "T":
            tensor = tensor.permute(1, 0)
        elif how == "conv":
            tensor = tensor.permute(3, 2, 0, 1)
        state[key] = tensor
        if key == "truncation.w_avg" and truncation is not None:
            psi, layers = truncation
            num_layers = 2 * int(np.log2(resolution)) - 2
            coefs = np.ones((1, num_layers, 1), np.float32)
            coefs[:, :layers] *= psi
            state["truncation.truncation"] = torch.from_numpy(coefs)
    return state


def _up_scope(key: str, resolution: int) -> str:
    layer = int(key.split(".")[1][len("layer") :])
    res = 2 ** (layer // 2 + 2)
    return f"{res}x{res}/Conv0_up"


def write_interfacegan_pth(path: Path, arrays, *, layout: str = "zip", **kwargs) -> Path:
    """``torch.save`` of :func:`interfacegan_state` (``layout`` ``"legacy"``: the pre-1.6 format)."""
    import torch

    torch.save(interfacegan_state(arrays, **kwargs), path, _use_new_zipfile_serialization=layout == "zip")
    return Path(path)
