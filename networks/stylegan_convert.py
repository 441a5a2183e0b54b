"""Read StyleGAN (v1) generator weights from NVIDIA's pickle or InterFaceGAN's ``.pth``, safely, and convert.

Two files hold the FFHQ generator:

* NVIDIA's ``karras2019stylegan-ffhq-1024x1024.pkl``: ``pickle.dump((G, D, Gs))`` of
  ``dnnlib.tflib.network.Network`` objects. Loading it the official way *executes* the Python source
  stored in each network (``build_module_src``), and any pickle can name any callable. We read it with a
  restricted unpickler (:class:`_OfficialUnpickler`) that resolves only an inert stand-in for ``Network``,
  plain dicts and numpy's array/dtype/scalar reconstruction (rebuilt here from the raw bytes, numeric
  dtypes only). Everything else is refused before it is called.
* InterFaceGAN's ``stylegan_ffhq.pth``: the same weights as a PyTorch state dict under InterFaceGAN's
  module names and layouts, read with :func:`advface.networks.torch_pickle.read_state_dict` and mapped
  back by :func:`interfacegan_table`.

Both readers return an :class:`OfficialStyleGAN`: every variable of the official ``Gs`` as
``"<component>/<tf name>"`` (``"mapping/Dense0/weight"``, ``"synthesis/4x4/Const/const"``,
``"synthesis/noise0"``, and Gs's own ``"lod"`` and ``"dlatent_avg"``) in the official TF layouts. The
Keras network (:mod:`advface.networks.stylegan`) is built from that; :func:`convert_stylegan` writes it
into ``saved-models/`` and :func:`convert_stylegan_ffhq` is the ``stylegan-ffhq`` registry hook behind
``advface zoo convert stylegan-ffhq FILE``.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import pickle
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError, WeightsError
from advface.networks.torch_pickle import LEGACY_MAGIC, UnsafePickleError, read_state_dict

__all__ = [
    "FFHQ_PICKLE",
    "OfficialStyleGAN",
    "UnsafePickleError",
    "convert_stylegan",
    "convert_stylegan_ffhq",
    "interfacegan_table",
    "read_interfacegan_pth",
    "read_official_pickle",
    "read_stylegan",
]

FFHQ_PICKLE = "karras2019stylegan-ffhq-1024x1024.pkl"
FFHQ_PTH = "stylegan_ffhq.pth"


@dataclass(frozen=True)
class OfficialStyleGAN:
    """The official generator ``Gs`` as arrays, whichever file it came from.

    Attributes:
        arrays: ``{"<component>/<tf name>" or Gs's own "<tf name>": array}`` in the official TF layouts
            (dense ``[in, out]``, conv ``[k, k, in, out]``, const ``[1, C, 4, 4]``, noise ``[1, 1, R, R]``).
        static_kwargs: the keyword arguments ``Gs`` was built with (``resolution``, ``num_channels``, and
            from InterFaceGAN's file the truncation ``truncation_psi`` / ``truncation_cutoff`` when it
            holds them).
        name: the network's name (``"Gs"`` in NVIDIA's pickle).
        source: ``"nvidia-pkl"`` or ``"interfacegan-pth"``.
        path: the file read.
    """

    arrays: dict[str, np.ndarray] = field(repr=False)
    static_kwargs: dict
    name: str
    source: str
    path: Path


# ---------------------------------------------------------------------------------------------------------
# 1. NVIDIA's pickle, read by a restricted unpickler.
#
# The file decides what the unpickler builds, so beyond naming only our own functions and classes the
# reader bounds what a small file can cost: error messages describe values with a bounded repr, settings
# are walked with a value budget, arrays may not claim more bytes than the file could hold, and nothing the
# unpickler hands out for a GLOBAL (shared by every file the process reads) can be changed by BUILD.


class _ShortRepr(reprlib.Repr):
    """``reprlib`` for unpickled values in error messages: bounded work and text whatever they hold.

    ``str(value)[:n]`` builds the whole text first, which for a memoised chain ``x = [x, x]`` forty deep
    (a few hundred bytes of pickle) never ends. Objects other than plain data show as their type name.
    """

    def __init__(self):
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxdict = 4
        self.maxstring = 40

    def repr1(self, x, level):
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        if isinstance(x, tuple):
            return self.repr_tuple(x, level)
        if isinstance(x, str):
            return self.repr_str(x, level)
        if isinstance(x, bytes):
            return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")
        if x is None or isinstance(x, bool | float) or (isinstance(x, int) and x.bit_length() <= 64):
            return repr(x)
        if isinstance(x, int):
            return f"<int of {x.bit_length()} bits>"
        return f"<{type(x).__name__}>"


_short = _ShortRepr().repr


def _build_on_global(state) -> WeightsError:
    return WeightsError(
        "Malformed StyleGAN pickle: BUILD on a global (the file tries to change the reader's own functions "
        f"or classes, with state {_short(state)}; nothing was executed). Use NVIDIA's original {FFHQ_PICKLE}."
    )


class _Frozen:
    """Base of what a GLOBAL resolves to other than a class: no instance state, and BUILD refused."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _build_on_global(state)


def _frozen(func):
    """``func`` as the unpickler hands it out: a stateless callable that the file cannot change."""
    return type(func.__name__, (_Frozen,), {"__slots__": (), "__call__": staticmethod(func)})()


class _FrozenClass(type):
    """Metaclass of the classes a GLOBAL resolves to (NEWOBJ needs real classes): BUILD on the class itself
    is refused. A data descriptor on the metaclass wins only for look-ups on the class, so the instances'
    own ``__setstate__`` still receives their pickled state."""

    @property
    def __setstate__(cls):
        def refuse(state):
            raise _build_on_global(state)

        return refuse


class _Network(metaclass=_FrozenClass):
    """Stands in for ``dnnlib.tflib.network.Network``: records the pickled state and does nothing else.

    The real class ``exec``s ``state["build_module_src"]`` when unpickled; this one never looks at it.
    """

    __slots__ = ("state",)

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise WeightsError("Malformed StyleGAN pickle: a Network constructed with arguments.")

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise WeightsError(f"Malformed StyleGAN pickle: a Network state of type {type(state).__name__}.")
        self.state = state

    def get(self, key, default=None):
        return getattr(self, "state", {}).get(key, default)

    def text(self, key: str) -> str | None:
        """The state's ``key`` if it is a string (None when absent); anything else is a malformed file."""
        value = self.get(key)
        if value is not None and type(value) is not str:
            raise WeightsError(
                f"Malformed StyleGAN pickle: a Network's {key} should be a string. Received: a "
                f"{type(value).__name__}. Use NVIDIA's original {FFHQ_PICKLE}."
            )
        return value


class _PlainDict(dict, metaclass=_FrozenClass):
    """``dnnlib.util.EasyDict`` and ``collections.OrderedDict``, read as a plain dict."""

    def __setstate__(self, state):
        if state:
            raise WeightsError("Malformed StyleGAN pickle: a dict with attribute state.")


class _NDArrayMarker(_Frozen):
    """What the pickle's ``numpy.ndarray`` global resolves to: only a marker for :func:`_reconstruct`."""

    __slots__ = ()


_NDARRAY = _NDArrayMarker()

# Plain numeric dtypes (numpy's pickled spelling); object, string, void and structured dtypes are refused.
_DTYPES = frozenset(["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"])


def _unsafe_dtype(description: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"Refusing a StyleGAN pickle with an array of dtype {description}: advface reads only plain "
        f"numeric arrays ({', '.join(sorted(_DTYPES))}); nothing in the file was executed. Use NVIDIA's "
        f"original {FFHQ_PICKLE}."
    )


class _Dtype(metaclass=_FrozenClass):
    """A pickled ``numpy.dtype``, validated: a plain numeric type and a byte order, nothing else."""

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str) or spec not in _DTYPES:
            raise _unsafe_dtype(_short(spec))
        self.spec = spec
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise WeightsError(f"Malformed dtype in StyleGAN pickle: state {_short(state)}.")
        _, order, subarray, names, fields, elsize, alignment, flags = state[:8]
        metadata = state[8] if len(state) == 9 else None
        if order not in ("<", ">", "|", "=") or (subarray, names, fields, metadata) != (None,) * 4:
            raise _unsafe_dtype(f"{self.spec} with state {_short(state)}")
        if (elsize, alignment, flags) != (-1, -1, 0):
            raise _unsafe_dtype(f"{self.spec} with state {_short(state)}")
        self.dtype = np.dtype(self.spec if order == "|" else order + self.spec)


class _ByteBudget:
    """What one file's arrays may materialise: twice the file's size and 1 MiB.

    A memoised ``bytes`` costs a file a few bytes for each array that refers to it, so without a bound a
    6 MB file claims gigabytes; each array's claim is checked before its memory is allocated.
    """

    def __init__(self, name: str, size: int):
        self.name, self.size, self.used = name, size, 0

    def spend(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > 2 * self.size + (1 << 20):
            raise WeightsError(
                f"{self.name}: the file's {what} claim at least {self.used:,} bytes but the file has only "
                f"{self.size:,} bytes: malformed or malicious (many of them share one buffer). Nothing was "
                f"executed; use NVIDIA's original {FFHQ_PICKLE}."
            )


_BYTES: contextvars.ContextVar[_ByteBudget] = contextvars.ContextVar("stylegan_pickle_bytes")
_MAX_DIMS = 32


def _from_bytes(data, dtype: _Dtype, shape: tuple, fortran: bool = False) -> np.ndarray:
    """An array of ``shape`` from raw bytes, native byte order, owning its memory; strict sizes."""
    if not isinstance(dtype, _Dtype):
        raise WeightsError("Malformed StyleGAN pickle: an array without a numpy dtype.")
    if isinstance(data, list | tuple):  # how numpy pickles object arrays
        raise _unsafe_dtype("'object'")
    if not isinstance(data, bytes | bytearray):
        raise WeightsError(f"Malformed StyleGAN pickle: array data of type {type(data).__name__}.")
    if not (
        isinstance(shape, tuple)
        and len(shape) <= _MAX_DIMS
        and all(type(n) is int and 0 <= n <= 1 << 48 for n in shape)
    ):
        raise WeightsError(f"Malformed StyleGAN pickle: array shape {_short(shape)}.")
    expected = math.prod(shape) * dtype.dtype.itemsize
    if len(data) != expected:
        raise WeightsError(
            f"Malformed StyleGAN pickle: an array of shape {shape} and dtype {dtype.dtype} needs {expected} "
            f"bytes but holds {len(data)}. The file is corrupt; download it again."
        )
    _BYTES.get().spend(expected, "arrays")  # before the copy below allocates it
    flat = np.frombuffer(data, dtype=dtype.dtype)
    array = flat.reshape(shape, order="F" if fortran else "C")
    # The one copy: arrays that own their memory, native order, C layout (keeps 0-d arrays 0-d).
    return np.array(array, dtype=dtype.dtype.newbyteorder("="), order="C")


class _Array:
    """An array being unpickled: ``_reconstruct`` makes it, BUILD fills it (``array``)."""

    __slots__ = ("array",)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise WeightsError(f"Malformed array in StyleGAN pickle: state {_short(state)}.")
        shape, dtype, fortran, data = state
        self.array = _from_bytes(data, dtype, shape, bool(fortran))


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise WeightsError("Malformed StyleGAN pickle: an array reconstructed from an unexpected recipe.")
    return _Array()


def _scalar(dtype, data):
    """A numpy scalar (the official ``lod`` variables are ``np.float32``), as a 0-d array."""
    return _from_bytes(data, dtype, ())


def _encode(text, encoding="utf-8"):
    """``_codecs.encode``, which protocol-2 pickles use for bytes; only the latin-1 form they write."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("Refusing a StyleGAN pickle that calls _codecs.encode other than for bytes.")
    _BYTES.get().spend(len(text), "byte strings")
    return text.encode("latin1")


class _OfficialUnpickler(pickle.Unpickler):
    """Resolves only what NVIDIA's (G, D, Gs) pickle needs, each to our own inert function or class.

    Every value here is shared by all the files this process reads, and none can be changed by a file:
    the functions are :class:`_Frozen` instances and the classes are :class:`_FrozenClass` ones.
    """

    SAFE = {
        ("dnnlib.tflib.network", "Network"): _Network,
        ("tfutil", "Network"): _Network,  # Progressive GAN's pickles: read only to say what they are
        ("dnnlib.util", "EasyDict"): _PlainDict,
        ("dnnlib", "EasyDict"): _PlainDict,
        ("collections", "OrderedDict"): _PlainDict,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Dtype,
        ("numpy.core.multiarray", "_reconstruct"): _frozen(_reconstruct),
        ("numpy._core.multiarray", "_reconstruct"): _frozen(_reconstruct),
        ("numpy.core.multiarray", "scalar"): _frozen(_scalar),
        ("numpy._core.multiarray", "scalar"): _frozen(_scalar),
        ("_codecs", "encode"): _frozen(_encode),
    }

    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        hint = ""
        if module.startswith("torch_utils") or module.startswith("torch"):
            hint = " It looks like a StyleGAN2-ADA / StyleGAN3 PyTorch pickle, which advface does not read."
        raise UnsafePickleError(
            f"Refusing to load {self._path.name}: its pickle asks for the Python global {module}.{name}, "
            "which a StyleGAN pickle does not need (nothing in the file was executed)."
            f"{hint} Use NVIDIA's original {FFHQ_PICKLE} or InterFaceGAN's {FFHQ_PTH}."
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"Refusing to load {self._path.name}: it holds a persistent reference {_short(pid)}, which "
            f"NVIDIA's StyleGAN pickles do not (nothing was executed). Use the original {FFHQ_PICKLE}."
        )


_MAX_VALUES = 100_000  # in one settings dict or variable list; FFHQ's largest (synthesis) holds ~400
_MAX_DEPTH = 64
_LEAVES = (int, float, bool, str, bytes)


def _kind(value) -> str:
    return "global" if isinstance(value, type | _Frozen) else type(value).__name__.strip("_")


def _plain(obj, what: str):
    """The unpickled ``what`` as plain Python: dicts, lists and tuples of numbers, strings, bytes, None and
    arrays. Anything else (a Network, a dtype, one of the reader's globals) is a malformed file.

    Every reference is walked and counted, up to ``_MAX_VALUES``: a value the pickle stores once and refers
    to many times (``x = [x, x]`` forty deep: a few hundred bytes, 2**40 values unfolded) is refused after
    that many steps instead of being copied without end, and the result is a tree that whatever comes next
    (json, repr, ==) walks in bounded time.
    """
    count = 0

    def walk(value, depth: int):
        nonlocal count
        count += 1
        if count > _MAX_VALUES:
            raise WeightsError(
                f"Malformed StyleGAN pickle: {what} hold more than {_MAX_VALUES:,} values (NVIDIA's hold a "
                "few hundred; a value the file refers to many times counts each time). Use NVIDIA's "
                f"original {FFHQ_PICKLE}."
            )
        if depth > _MAX_DEPTH:
            raise WeightsError(
                f"Malformed StyleGAN pickle: {what} nest deeper than {_MAX_DEPTH} levels. Use NVIDIA's "
                f"original {FFHQ_PICKLE}."
            )
        if value is None or type(value) in _LEAVES or type(value) is np.ndarray:
            return value
        if type(value) is _Array:
            if not hasattr(value, "array"):
                raise WeightsError("Malformed StyleGAN pickle: an array whose data never came.")
            return value.array
        if type(value) in (dict, _PlainDict):
            out = {}
            for key, item in value.items():
                if not (key is None or type(key) in _LEAVES):
                    raise WeightsError(
                        f"Malformed StyleGAN pickle: {what} have a key that is a {_kind(key)}, not a string."
                    )
                out[key] = walk(item, depth + 1)
            return out
        if type(value) in (list, tuple):
            return type(value)(walk(item, depth + 1) for item in value)
        raise WeightsError(
            f"Malformed StyleGAN pickle: {what} hold a {_kind(value)}, not a plain value (numbers, strings, "
            f"arrays, and lists, tuples and dicts of them). Use NVIDIA's original {FFHQ_PICKLE}."
        )

    return walk(obj, 0)


def _sniff(path: Path) -> str:
    """``"torch"``, ``"html"``, ``"empty"``, ``"pickle"`` or ``"other"``, from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(1024)
    legacy_torch = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(legacy_torch):
        return "torch"
    if re.match(rb"\s*(<!doctype html|<html|<\?xml|<head|<!--)", head, re.IGNORECASE):
        return "html"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}", b"c"):
        return "pickle"
    return "other"


def _check_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"StyleGAN weights file not found. Received: path={str(path)!r}. Expected NVIDIA's {FFHQ_PICKLE} "
            f"or InterFaceGAN's {FFHQ_PTH}."
        )
    return path


_KNOWN_NETWORKS = {
    "G_style": "StyleGAN's generator",
    "G_main": "a StyleGAN2 generator",
    "G_paper": "a Progressive GAN generator",
    "D_basic": "a StyleGAN discriminator",
    "D_stylegan2": "a StyleGAN2 discriminator",
    "D_paper": "a Progressive GAN discriminator",
}


def _describe(net: _Network) -> str:
    func = net.text("build_func_name")
    what = _KNOWN_NETWORKS.get(func, "an unknown network")
    return f"{what} (network {_short(net.text('name'))}, build function {_short(func)})"


def _variables(net: _Network, where: str, path: Path) -> dict[str, np.ndarray]:
    variables = _plain(net.get("variables"), f"the variables of {where}")
    if not isinstance(variables, list | tuple):
        raise WeightsError(f"{path.name}: the network {where} has no variables list; the file is corrupt.")
    out = {}
    for item in variables:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise WeightsError(f"{path.name}: a malformed variable entry in {where}; the file is corrupt.")
        name, value = item
        if not isinstance(value, np.ndarray):
            raise WeightsError(
                f"{path.name}: variable {where}/{name} is a {type(value).__name__}, not an array. The file "
                "is corrupt; download it again."
            )
        out[name] = value
    return out


def read_official_pickle(path) -> OfficialStyleGAN:
    """The generator ``Gs`` of NVIDIA's StyleGAN pickle, read without executing anything.

    Args:
        path: ``karras2019stylegan-ffhq-1024x1024.pkl`` or another StyleGAN (v1) pickle: ``(G, D, Gs)`` as
            NVIDIA's training wrote it, or a bare ``Gs`` network.

    Returns:
        :class:`OfficialStyleGAN` with every variable of ``Gs`` and its mapping and synthesis networks.

    Raises:
        UnsafePickleError: the pickle names a global other than the network, dict and numpy
            reconstruction ones, or holds a non-numeric array (nothing is called).
        WeightsError: the file is missing, not a pickle, an HTML page, truncated, or not StyleGAN v1
            (a Progressive GAN or StyleGAN2 pickle is named as such); or it is built to cost far more than
            its size (settings of over 100,000 values counting shared ones each time, arrays claiming more
            than twice its bytes) or to change the reader (BUILD on a global). All in bounded time.
    """
    path = _check_file(path)
    kind = _sniff(path)
    if kind == "empty":
        raise WeightsError(f"{path.name} is empty. Download {FFHQ_PICKLE} again.")
    if kind == "html":
        raise WeightsError(
            f"{path.name} is an HTML page, not a pickle: the download link returned a web page (for example "
            f"a quota or sign-in notice). Download {FFHQ_PICKLE} itself and check its md5."
        )
    if kind == "torch":
        raise WeightsError(
            f"{path.name} is a PyTorch checkpoint, not NVIDIA's pickle. Read it with read_interfacegan_pth "
            "(`advface zoo convert stylegan-ffhq FILE` takes either)."
        )
    if kind != "pickle":
        with open(path, "rb") as f:
            head = f.read(8)
        raise WeightsError(
            f"{path.name} is not a Python pickle (it starts with {head!r}). Expected NVIDIA's {FFHQ_PICKLE}."
        )
    try:
        with open(path, "rb") as f:
            budget = _BYTES.set(_ByteBudget(path.name, os.fstat(f.fileno()).st_size))
            try:
                top = _OfficialUnpickler(f, path).load()
            finally:
                _BYTES.reset(budget)
    except (pickle.UnpicklingError, EOFError) as exc:
        raise WeightsError(
            f"{path.name} is truncated or corrupt ({_reason(exc)}). Download it again and check its md5."
        ) from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError, MemoryError) as exc:
        raise WeightsError(
            f"{path.name} is not a readable StyleGAN pickle ({_reason(exc)}). Download it again and check "
            "its md5."
        ) from None

    try:
        return _official_gs(top, path)
    except RecursionError:
        raise WeightsError(f"{path.name} is not a readable StyleGAN pickle (it nests without end).") from None


def _reason(exc: BaseException) -> str:
    """``Type: message`` of an exception, short whatever its arguments hold."""
    text = exc.args[0] if len(exc.args) == 1 and type(exc.args[0]) is str else _short(exc.args)
    return f"{type(exc).__name__}: {text[:80]}"


def _official_gs(top, path: Path) -> OfficialStyleGAN:
    """Gs of the unpickled top-level object, flattened into the official names."""
    # The official file is (G, D, Gs); the averaged generator Gs is the one to use.
    if isinstance(top, tuple) and len(top) == 3 and all(isinstance(n, _Network) for n in top):
        gs = top[2]
    elif isinstance(top, _Network) and top.text("build_func_name") == "G_style":
        gs = top
    else:
        found = (
            f"a tuple of {len(top)}"
            if isinstance(top, tuple)
            else _describe(top)
            if isinstance(top, _Network)
            else f"a {type(top).__name__}"
        )
        raise WeightsError(
            f"{path.name} does not hold StyleGAN's (G, D, Gs) networks. Received: {found}. Expected NVIDIA's "
            f"{FFHQ_PICKLE}."
        )
    if gs.text("build_func_name") != "G_style":
        raise WeightsError(
            f"{path.name} is not a StyleGAN (v1) generator. Received: {_describe(gs)}. advface reads "
            f"StyleGAN v1 (G_style), e.g. NVIDIA's {FFHQ_PICKLE}."
        )
    version = gs.get("version")
    if type(version) is not int or version not in (2, 3):
        raise WeightsError(
            f"{path.name}: unknown Network pickle version. Received: version={_short(version)}. "
            "Expected 2 or 3 (NVIDIA's StyleGAN release)."
        )
    name = gs.text("name")
    components = gs.get("components")
    expected = {"mapping": "G_mapping", "synthesis": "G_synthesis"}
    if not isinstance(components, dict) or set(components) != set(expected):
        got = components
        if isinstance(components, dict):
            keys = list(components)
            got = sorted(keys) if all(type(k) is str for k in keys) else keys
        raise WeightsError(
            f"{path.name}: StyleGAN's Gs has the components mapping and synthesis. Received: "
            f"components={_short(got)}."
        )
    arrays = dict(_variables(gs, name, path))
    for key, func in expected.items():
        component = components[key]
        if not isinstance(component, _Network) or component.get("build_func_name") != func:
            found = _describe(component) if isinstance(component, _Network) else type(component).__name__
            raise WeightsError(
                f"{path.name}: Gs's {key} network is not StyleGAN's {func}. Received: {found}."
            )
        sub = component.get("components")
        if not (sub is None or (isinstance(sub, dict) and not sub)):
            raise WeightsError(f"{path.name}: Gs's {key} network has sub-networks, unlike StyleGAN's.")
        arrays.update((f"{key}/{n}", value) for n, value in _variables(component, key, path).items())
    static_kwargs = gs.get("static_kwargs")
    static_kwargs = {} if static_kwargs is None else _plain(static_kwargs, f"{name}'s static_kwargs")
    if not isinstance(static_kwargs, dict):
        raise WeightsError(f"{path.name}: Gs's static_kwargs are not a dict; the file is corrupt.")
    # A numpy scalar setting (truncation_psi=np.float32(0.7)) as the Python number it stands for.
    static_kwargs = {
        k: v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v for k, v in static_kwargs.items()
    }
    return OfficialStyleGAN(arrays, static_kwargs, str(name), "nvidia-pkl", path)


# ---------------------------------------------------------------------------------------------------------
# 2. InterFaceGAN's .pth: the same variables under its module names and PyTorch layouts.


def _dense(w: np.ndarray) -> np.ndarray:
    return w.T  # torch Linear [out, in] -> TF [in, out]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # torch Conv2d [out, in, k, k] -> TF [k, k, in, out]


def _same(w: np.ndarray) -> np.ndarray:
    return w


_LAYOUT = {"dense": _dense, "conv": _conv, "same": _same}


def interfacegan_table(resolution: int, mapping_layers: int = 8) -> dict[str, tuple[str, str]]:
    """InterFaceGAN's state-dict names for a StyleGAN of ``resolution``, each to ``(official name, layout)``.

    ``layout`` is ``"dense"`` (InterFaceGAN transposed ``[in, out]`` to ``[out, in]``), ``"conv"`` (it
    permuted ``[k, k, in, out]`` to ``[out, in, k, k]``) or ``"same"``. An upsampling layer InterFaceGAN
    runs fused (``conv_transpose2d``, from 128x128 up by default) keeps the TF kernel as
    ``synthesis.layer{i}.weight`` instead of ``synthesis.layer{i}.conv.weight``; both spellings are listed
    (a file holds one of them per layer). Blur kernels (``synthesis.layer{i}.blur.kernel``) are constants
    checked and dropped by :func:`read_interfacegan_pth`, not listed here.
    """
    log2 = int(math.log2(resolution))
    if resolution != 2**log2 or resolution < 8:
        raise AdvfaceError(f"StyleGAN resolutions are powers of two >= 8. Received: resolution={resolution}.")
    table = {"truncation.w_avg": ("dlatent_avg", "same"), "synthesis.lod": ("synthesis/lod", "same")}
    for i in range(mapping_layers):
        table[f"mapping.dense{i}.linear.weight"] = (f"mapping/Dense{i}/weight", "dense")
        table[f"mapping.dense{i}.wscale.bias"] = (f"mapping/Dense{i}/bias", "same")
    for layer in range(2 * log2 - 2):
        res = 2 ** (layer // 2 + 2)
        scope = ("4x4/Const" if layer == 0 else "4x4/Conv") if res == 4 else f"{res}x{res}/Conv{layer % 2}"
        if res > 4 and layer % 2 == 0:
            scope += "_up"
        ours, theirs = f"synthesis/{scope}", f"synthesis.layer{layer}"
        if layer == 0:
            table[f"{theirs}.first_layer"] = (f"{ours}/const", "same")
        else:
            table[f"{theirs}.conv.weight"] = (f"{ours}/weight", "conv")
        if layer % 2 == 0 and res > 4:
            table[f"{theirs}.weight"] = (f"{ours}/weight", "same")  # fused: TF layout kept
        table[f"{theirs}.epilogue.apply_noise.noise"] = (f"synthesis/noise{layer}", "same")
        table[f"{theirs}.epilogue.apply_noise.weight"] = (f"{ours}/Noise/weight", "same")
        table[f"{theirs}.epilogue.bias"] = (f"{ours}/bias", "same")
        table[f"{theirs}.epilogue.style_mod.dense.linear.weight"] = (f"{ours}/StyleMod/weight", "dense")
        table[f"{theirs}.epilogue.style_mod.dense.wscale.bias"] = (f"{ours}/StyleMod/bias", "same")
    for block in range(log2 - 1):
        lod = log2 - 2 - block
        table[f"synthesis.output{block}.conv.weight"] = (f"synthesis/ToRGB_lod{lod}/weight", "conv")
        table[f"synthesis.output{block}.bias"] = (f"synthesis/ToRGB_lod{lod}/bias", "same")
    return table


_BLUR = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16


def _truncation_kwargs(coefs: np.ndarray, num_layers: int, path: Path) -> dict:
    """``truncation.truncation`` ([1, L, 1]: psi for the first ``cutoff`` layers, 1 after) as kwargs."""
    flat = np.asarray(coefs, np.float64).reshape(-1)
    if coefs.shape != (1, num_layers, 1):
        raise WeightsError(
            f"{path.name}: truncation.truncation should be of shape (1, {num_layers}, 1). Received: "
            f"shape={coefs.shape}."
        )
    cutoff = int(np.argmax(flat == 1.0)) if np.any(flat == 1.0) else num_layers
    psi = float(np.float32(flat[0])) if cutoff else 1.0
    if not (np.all(flat[:cutoff] == flat[0]) and np.all(flat[cutoff:] == 1.0)):
        raise WeightsError(
            f"{path.name}: truncation.truncation is not psi for the first layers and 1 after. Received: "
            f"{np.round(flat, 4).tolist()}."
        )
    if cutoff == 0:
        return {"truncation_psi": 1.0, "truncation_cutoff": None}
    return {"truncation_psi": psi, "truncation_cutoff": cutoff}


def read_interfacegan_pth(path) -> OfficialStyleGAN:
    """InterFaceGAN's StyleGAN ``.pth`` (``StyleGANGeneratorModel`` state dict) as official arrays.

    Read with the safe torch reader (executes nothing). Each tensor is mapped through
    :func:`interfacegan_table` with the inverse of InterFaceGAN's transposes; its blur kernels must be the
    normalised ``[1, 2, 1]`` filter (then dropped); ``truncation.truncation``, which InterFaceGAN's own
    converter leaves out of the file, becomes ``truncation_psi`` / ``truncation_cutoff`` when present.
    InterFaceGAN keeps one ``lod`` (the synthesis network's); Gs's own ``lod`` is given the same value.

    Raises:
        UnsafePickleError: the checkpoint names a global other than tensors and containers.
        WeightsError: a name matches nothing in the table, one is missing, a blur kernel differs.
    """
    path = _check_file(path)
    state = read_state_dict(path)
    outputs = [k for k in state if re.fullmatch(r"synthesis\.output\d+\.bias", k)]
    mapping = [k for k in state if re.fullmatch(r"mapping\.dense\d+\.wscale\.bias", k)]
    if not outputs or not mapping:
        sample = ", ".join(list(state)[:4])
        raise WeightsError(
            f"{path.name} is not an InterFaceGAN StyleGAN state dict (no synthesis.output*/mapping.dense* "
            f"tensors). Received: {len(state)} tensors such as {sample}. Expected InterFaceGAN's {FFHQ_PTH}."
        )
    resolution = 2 ** (len(outputs) + 1)
    num_layers = 2 * len(outputs)
    table = interfacegan_table(resolution, len(mapping))

    arrays: dict[str, np.ndarray] = {}
    static_kwargs: dict = {"resolution": resolution, "label_size": 0}
    unknown = []
    for name, value in state.items():
        blur = re.fullmatch(r"synthesis\.layer(\d+)\.blur\.kernel", name)
        if blur and int(blur[1]) % 2 == 0 and 0 < int(blur[1]) < num_layers:
            if value.ndim != 4 or value.shape[1:] != (1, 3, 3) or not np.allclose(value, _BLUR, atol=1e-7):
                raise WeightsError(
                    f"{path.name}: {name} is not the normalised [1, 2, 1] blur filter StyleGAN uses. "
                    f"Received: shape={value.shape}. The file is corrupt or not InterFaceGAN's."
                )
            continue
        if name == "truncation.truncation":
            static_kwargs.update(_truncation_kwargs(value, num_layers, path))
            continue
        if name not in table:
            unknown.append(name)
            continue
        ours, layout = table[name]
        if ours in arrays:
            raise WeightsError(f"{path.name} holds {ours} twice (fused and unfused spellings): {name}.")
        arrays[ours] = np.array(_LAYOUT[layout](value), order="C")
    # What the file lacks, in its own names (an upsampling kernel has two spellings: fused or not).
    missing = [
        " or ".join(theirs for theirs, (o, _) in table.items() if o == ours)
        for ours in dict.fromkeys(o for o, _ in table.values())
        if ours not in arrays
    ]
    if unknown or missing:
        raise WeightsError(
            f"{path.name} does not match InterFaceGAN's StyleGAN {resolution}x{resolution} layout (names "
            f"listed as in the file). Received: unknown={unknown[:8]}{' ...' if len(unknown) > 8 else ''}, "
            f"missing={missing[:8]}{' ...' if len(missing) > 8 else ''}. Expected InterFaceGAN's {FFHQ_PTH}."
        )
    fused = [f"synthesis.layer{2 * k}.weight" in state for k in range(1, len(outputs))]  # 2^(k+2) squared
    auto = [2 ** (k + 2) >= 128 for k in range(1, len(outputs))]
    if (
        fused != auto
    ):  # InterFaceGAN built with fused_scale True or False: which layers fuse changes the function
        if len(set(fused)) != 1:
            raise WeightsError(
                f"{path.name} fuses some upsampling convolutions and not others, unlike any StyleGAN "
                f"(fused_scale True, False or 'auto'). Received: fused by layer {fused}."
            )
        static_kwargs["fused_scale"] = fused[0]
    arrays["lod"] = arrays["synthesis/lod"].copy()
    static_kwargs["num_channels"] = int(arrays["synthesis/ToRGB_lod0/bias"].shape[0])
    return OfficialStyleGAN(arrays, static_kwargs, "Gs", "interfacegan-pth", path)


# ---------------------------------------------------------------------------------------------------------
# 3. Conversion into saved-models/.


def read_stylegan(path) -> OfficialStyleGAN:
    """NVIDIA's pickle or InterFaceGAN's ``.pth``, told apart by content (not by the file name)."""
    path = _check_file(path)
    if _sniff(path) == "torch":
        return read_interfacegan_pth(path)
    return read_official_pickle(path)


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # the hash NVIDIA published for its pickles
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_shapes(official: OfficialStyleGAN, expected: dict[str, tuple], what: str) -> None:
    got = {name: tuple(a.shape) for name, a in official.arrays.items()}
    expected = {name: tuple(shape) for name, shape in expected.items()}
    missing = sorted(set(expected) - set(got))
    unknown = sorted(set(got) - set(expected))
    wrong = [
        f"{n} {got[n]} (expected {expected[n]})"
        for n in sorted(set(got) & set(expected))
        if got[n] != expected[n]
    ]
    if missing or unknown or wrong:
        raise WeightsError(
            f"{official.path.name} does not hold {what}. Received: {len(wrong)} tensors of other shapes "
            f"{wrong[:3]}, missing={missing[:5]}, unknown={unknown[:5]}."
        )


def convert_stylegan(
    path,
    name: str,
    *,
    expected_md5: str | None = None,
    expected_config=None,
    overwrite: bool = False,
    seed: int = 0,
):
    """Convert a StyleGAN file into ``saved-models/<name>.weights.h5`` and check the saved file.

    Writes ``<name>.json`` with ``{"config": StyleGANConfig.to_dict(), "source", "source_md5",
    "source_sha256", "source_format"}`` so that ``stylegan(StyleGANConfig.from_dict(meta["config"]),
    weights=name)`` rebuilds it, and records the file in ``MODELS.md``.

    Args:
        path: NVIDIA's pickle or InterFaceGAN's ``.pth`` (told apart by content).
        name: the saved-models name, e.g. ``"stylegan-ffhq"``.
        expected_md5: when given, the md5 a pickle must have (checked before it is read); an InterFaceGAN
            ``.pth`` has no published hash and is checked by ``expected_config`` instead.
        expected_config: when given (a ``StyleGANConfig``), every tensor must have its shape.
        overwrite: replace existing weights.
        seed: the random latents of the self-check.

    Returns:
        :class:`advface.zoo.Conversion`; ``reload_max_diff`` compares the converted model with the saved
        file rebuilt from its metadata, on random latents with the stored noise (0 expected).
    """
    from advface.networks.stylegan import StyleGANConfig, config_from_official, load_official, stylegan
    from advface.savedmodels import read_metadata, sha256, store, weights_file
    from advface.zoo import Conversion

    path = _check_file(path)
    target = weights_file(name)
    if target.exists() and not overwrite:
        raise AdvfaceError(f"{target} exists. Pass --overwrite (overwrite=True) to replace it.")
    kind = _sniff(path)
    if kind not in ("pickle", "torch"):
        read_official_pickle(path)  # says what the file is instead (empty, an HTML page, not a pickle)
    md5 = _md5(path)
    if expected_md5 is not None and kind == "pickle" and md5 != expected_md5:
        raise WeightsError(
            f"{path.name} is not NVIDIA's {FFHQ_PICKLE} (md5 {expected_md5}). Received: md5={md5}. Download "
            f"that file again, or convert InterFaceGAN's {FFHQ_PTH}."
        )
    official = read_stylegan(path)
    if expected_config is not None:
        from advface.networks.stylegan import official_variables

        _check_shapes(official, official_variables(expected_config), f"the {name} configuration")

    config = config_from_official(official.arrays, official.static_kwargs)
    model = stylegan(config)
    load_official(model, official.arrays)
    source_sha = sha256(path)
    meta = {
        "kind": "generator",
        "config": config.to_dict(),
        "source": path.name,
        "source_format": official.source,
        "source_md5": md5,
        "source_sha256": source_sha,
    }
    target, digest = store(
        model,
        name,
        origin=f"converted from {path.name} ({official.source}, md5 {md5})",
        command=f"advface zoo convert {name} {path.name}",
        meta=meta,
    )
    # Self-check: the saved file, rebuilt from its metadata, computes what the converted model does.
    rebuilt = stylegan(StyleGANConfig.from_dict(read_metadata(name)["config"]), weights=name)
    z = np.random.default_rng(seed).standard_normal((1, config.latent_size)).astype(np.float32)
    diff = float(np.max(np.abs(np.asarray(rebuilt(z)) - np.asarray(model(z)))))
    return Conversion(
        name, target, digest, path, source_sha, int(model.count_params()), diff, kind="generator"
    )


def convert_stylegan_ffhq(path, *, overwrite: bool = False):
    """The ``stylegan-ffhq`` registry hook: NVIDIA's FFHQ pickle (md5 checked) or InterFaceGAN's ``.pth``
    (checked by shapes against the FFHQ 1024x1024 configuration) into ``saved-models/stylegan-ffhq``."""
    from advface.generators import STYLEGAN_FFHQ_MD5
    from advface.networks.stylegan import STYLEGAN_CONFIGS

    return convert_stylegan(
        path,
        "stylegan-ffhq",
        expected_md5=STYLEGAN_FFHQ_MD5,
        expected_config=STYLEGAN_CONFIGS["ffhq"],
        overwrite=overwrite,
    )
