"""Read PyTorch checkpoint files (``torch.save``) into numpy arrays without torch and without running code.

A ``.pth`` / ``.pt`` file is a Python pickle whose tensors point at raw storage blobs. Unpickling it with
:mod:`pickle` (or ``torch.load`` without ``weights_only``) can run any code the file names, so a downloaded
checkpoint is an attack vector. This reader uses a restricted unpickler: the only globals it resolves are
the handful that describe containers and tensors (``collections.OrderedDict``, ``torch._utils``'s tensor
rebuilders and the ``torch.*Storage`` dtype markers), each mapped to our own numpy function. Any other
global (``os.system``, ``builtins.eval``, a model class, ...) is refused before anything is called.

Both on-disk layouts of ``torch.save`` are read:

* the zip layout (torch >= 1.6): ``<name>/data.pkl`` plus one file ``<name>/data/<key>`` per storage;
* the legacy layout (``_use_new_zipfile_serialization=False``, torch < 1.6): a magic number, protocol
  version and system info, then the object pickle, the list of storage keys, and for each key an int64
  element count followed by the raw little-endian bytes.

The very old tar layout (torch < 0.4) is reported as unsupported.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advface.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    # bfloat16 has no numpy dtype: read as uint16 and widened in _bfloat16_to_float32.
    "BFloat16Storage": "bfloat16",
}


class UnsafePickleError(WeightsError):
    """A checkpoint that asks the unpickler for something other than containers and tensors."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A typed storage: resolved to a flat numpy array once its bytes are known."""

    key: str
    dtype: object
    numel: int
    array: np.ndarray | None = None


@dataclass
class _LazyTensor:
    """A tensor whose storage bytes come after the pickle (legacy layout); resolved in ``_materialise``."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _strided(storage: _Storage, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    flat = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise WeightsError(
            f"Malformed tensor in checkpoint: size={size}, stride={stride}, offset={offset}. "
            "The file is corrupt; re-save it with torch.save(model.state_dict(), path)."
        )
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise WeightsError(
            f"Malformed tensor in checkpoint: it reaches element {last} of a storage of {flat.size}. "
            "The file is truncated or corrupt; re-save it with torch.save(model.state_dict(), path)."
        )
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise WeightsError("Malformed checkpoint: a tensor without a storage. The file is corrupt.")
    if storage.array is None:
        return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))
    return _strided(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


class _Unpickler(pickle.Unpickler):
    """Resolves only container and tensor globals; resolves storages through ``storages``."""

    SAFE = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }

    def __init__(self, file, storages: dict, path: Path):
        super().__init__(file)
        self._storages = storages
        self._path = path

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"Refusing to load {self._path.name}: its pickle asks for the Python global {module}.{name}, and "
            "advface reads only tensors and containers (nothing in the file was executed). If the file is a "
            "whole pickled model or holds custom objects, load it in a trusted PyTorch session and re-save "
            "only the weights: torch.save(model.state_dict(), 'weights.pth')."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise UnsafePickleError(
                f"Refusing to load {self._path.name}: unknown persistent object {str(pid)[:80]!r}. "
                "Re-save the weights with torch.save(model.state_dict(), path)."
            )
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"Malformed checkpoint {self._path.name}: storage of unknown type.")
        if len(pid) > 5 and pid[5] is not None:
            raise WeightsError(
                f"{self._path.name} uses storage views (a pre-1.0 PyTorch feature) that advface does not "
                "read. Re-save it with a current PyTorch: torch.save(torch.load(f), 'new.pth')."
            )
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self._storages[key]


def _read_array(raw: bytes, dtype) -> np.ndarray:
    if dtype == "bfloat16":
        return _bfloat16_to_float32(np.frombuffer(raw, "<u2"))
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _load_zip(path: Path, archive: zipfile.ZipFile):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise WeightsError(
            f"{path.name} is a zip file but not a torch.save checkpoint (no <name>/data.pkl; TorchScript "
            "archives hold code, not a state dict). Save the weights with "
            "torch.save(model.state_dict(), path)."
        )
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() not in (b"little", b""):
        raise WeightsError(f"{path.name} was written on a big-endian machine, which advface does not read.")
    storages: dict[str, _Storage] = {}

    class ZipUnpickler(_Unpickler):
        def persistent_load(self, pid):
            storage = super().persistent_load(pid)
            if storage.array is None:
                member = f"{prefix}data/{storage.key}"
                if member not in names:
                    raise WeightsError(f"{path.name} is truncated: storage {storage.key} is missing.")
                storage.array = _read_array(archive.read(member), storage.dtype)
                if storage.array.size < storage.numel:
                    raise WeightsError(f"{path.name} is truncated: storage {storage.key} is short.")
            return storage

    return ZipUnpickler(io.BytesIO(archive.read(pickles[0])), storages, path).load()


def _load_legacy(path: Path, data: bytes):
    stream = io.BytesIO(data)
    header = _Unpickler(stream, {}, path)  # the three header pickles hold only ints and a dict
    if header.load() != LEGACY_MAGIC:
        raise WeightsError(
            f"{path.name} is not a PyTorch checkpoint (neither a torch.save zip nor the legacy format)."
        )
    if header.load() != LEGACY_PROTOCOL:
        raise WeightsError(f"{path.name}: unsupported legacy torch protocol version.")
    header.load()  # system info: endianness and type sizes
    storages: dict[str, _Storage] = {}
    result = _Unpickler(stream, storages, path).load()
    keys = _Unpickler(stream, {}, path).load()
    for key in keys:
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in storages:
            raise WeightsError(f"Malformed checkpoint {path.name}: storage {key} is not referenced.")
        storage = storages[key]
        count = stream.read(8)
        if len(count) < 8:
            raise WeightsError(f"{path.name} is truncated (storage {key}).")
        (numel,) = struct.unpack("<q", count)
        itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
        raw = stream.read(numel * itemsize)
        if len(raw) < numel * itemsize or numel < storage.numel:
            raise WeightsError(f"{path.name} is truncated (storage {key}).")
        storage.array = _read_array(raw, storage.dtype)
    return _materialise(result)


def _materialise(obj, memo: dict | None = None):
    """``obj`` with every lazy tensor read; an object the pickle shares is converted once and shared again
    (a few hundred bytes of ``x = [x, x]`` nested 40 deep would otherwise take 2^40 steps)."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _LazyTensor):
        if obj.storage.array is None:
            raise WeightsError("Malformed checkpoint: a tensor whose storage bytes are missing.")
        out = _strided(obj.storage, obj.offset, obj.size, obj.stride)
    elif isinstance(obj, dict):
        out = memo[id(obj)] = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, memo)
        return out
    elif isinstance(obj, list | tuple):
        out = type(obj)(_materialise(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = out
    return out


def read_torch_file(path) -> object:
    """The object in a ``torch.save`` file, with every tensor as a numpy array; executes nothing.

    Args:
        path: a ``.pth`` / ``.pt`` / ``.tar`` file written by ``torch.save``.

    Returns:
        The saved object: dicts, lists, tuples, numbers, strings and ``np.ndarray`` (bfloat16 widened to
        float32).

    Raises:
        UnsafePickleError: the file names a global other than containers and tensors (it is not run).
        WeightsError: the file is missing, truncated or not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file not found. Received: path={str(path)!r}.")
    data = path.read_bytes()
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return _load_zip(path, archive)
        if len(data) > 262 and data[257:262] == b"ustar":
            raise WeightsError(
                f"{path.name} is in the tar format of PyTorch < 0.4, which advface does not read. "
                "Re-save it with a current PyTorch: torch.save(torch.load(f), 'new.pth')."
            )
        return _load_legacy(path, data)
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        MemoryError,
    ) as exc:
        raise WeightsError(
            f"{path.name} is not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:100]}). "
            "Check that the download is complete."
        ) from None


def read_state_dict(path) -> dict[str, np.ndarray]:
    """A flat ``{name: array}`` state dict from a ``torch.save`` file, executing nothing.

    Accepts a bare state dict or a training checkpoint that holds one under ``state_dict``, ``model`` or
    ``model_state_dict``; a ``module.`` prefix (``DataParallel``) is removed.
    """
    path = Path(path)
    obj = read_torch_file(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise WeightsError(
            f"{path.name} does not hold a state dict (a mapping of names to tensors). Save one with "
            "torch.save(model.state_dict(), path)."
        )
    names = list(obj)
    if all(n.startswith("module.") for n in names):
        names = [n[len("module.") :] for n in names]
    return dict(zip(names, obj.values(), strict=True))
