"""An independent numpy StyleGAN (v1) generator for tests only.

Written from the official maths (``networks_stylegan.py``: ``G_style`` at ``lod = 0``) in the official
NCHW layout, on the raw TF-layout arrays of ``Gs`` (keys as ``advface.networks.stylegan.official_variables``),
applying the equalised-learning-rate multipliers itself. Float64 throughout. Nothing here imports advface.
"""

from __future__ import annotations

import numpy as np

SQRT2 = np.sqrt(2.0)


def lrelu(x):
    """The official ``max(x, 0.2 x)``."""
    return np.maximum(x, 0.2 * x)


def pixel_norm(x, axis=1):
    return x / np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + 1e-8)


def runtime_weight(w, gain, lrmul=1.0):
    """``get_weight`` with use_wscale: the stored weight times ``gain / sqrt(fan_in) * lrmul``."""
    fan_in = np.prod(w.shape[:-1])
    return np.asarray(w, np.float64) * (gain / np.sqrt(fan_in) * lrmul)


def conv2d(x, w):
    """NCHW cross-correlation with ``w`` [k, k, in, out], stride 1, zero 'SAME' padding (odd k)."""
    k = w.shape[0]
    p = k // 2
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, w.shape[3], h, wd))
    for a in range(k):
        for b in range(k):
            out += np.einsum("nchw,co->nohw", xp[:, :, a : a + h, b : b + wd], w[a, b])
    return out


def upscale2d(x):
    """Nearest-neighbour 2x: each pixel becomes a 2x2 block."""
    return x.repeat(2, axis=2).repeat(2, axis=3)


def conv2d_transpose_stride2(x, w):
    """TF ``conv2d_transpose`` with stride 2, 'SAME', output 2H x 2W, kernel ``w`` [4, 4, out, in].

    Computed from the definition (the adjoint of the stride-2 'SAME' convolution, whose padding before is
    1 for a 4-tap kernel): input pixel (i, j) adds ``x[i, j] * w[a, b]`` to output pixel
    ``(2i + a - 1, 2j + b - 1)``.
    """
    n, _, h, wd = x.shape
    k = w.shape[0]
    out = np.zeros((n, w.shape[2], 2 * h + k, 2 * wd + k))  # output index + 1, with room for overhang
    for a in range(k):
        for b in range(k):
            out[:, :, a : a + 2 * h : 2, b : b + 2 * wd : 2] += np.einsum("ncij,oc->noij", x, w[a, b])
    return out[:, :, 1 : 1 + 2 * h, 1 : 1 + 2 * wd]


def fused_upscale_conv(x, w):
    """The official fused ``upscale2d_conv2d``: 3x3 ``w`` [3, 3, in, out] -> 4x4 transposed kernel."""
    w = np.transpose(w, (0, 1, 3, 2))
    w = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
    return conv2d_transpose_stride2(x, w)


def blur(x):
    """Depthwise ``[1, 2, 1]^T [1, 2, 1] / 16``, zero 'SAME' padding."""
    f = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    _, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(f[a, b] * xp[:, :, a : a + h, b : b + wd] for a in range(3) for b in range(3))


def instance_norm(x):
    x = x - x.mean(axis=(2, 3), keepdims=True)
    return x / np.sqrt(np.mean(x**2, axis=(2, 3), keepdims=True) + 1e-8)


def style_mod(x, w, weight, bias):
    """``style = w @ W + b`` (gain 1), reshaped [N, 2, C]: ``x * (style[:, 0] + 1) + style[:, 1]``."""
    style = (w @ runtime_weight(weight, 1.0) + bias).reshape(len(w), 2, x.shape[1])
    return x * (style[:, 0, :, None, None] + 1.0) + style[:, 1, :, None, None]


def mapping(arrays, z, lrmul=0.01):
    """z [N, latent] -> w [N, dlatent]: pixel norm, then dense + bias (both times lrmul) + lrelu."""
    x = pixel_norm(np.asarray(z, np.float64))
    i = 0
    while f"mapping/Dense{i}/weight" in arrays:
        weight, bias = arrays[f"mapping/Dense{i}/weight"], arrays[f"mapping/Dense{i}/bias"]
        x = lrelu(x @ runtime_weight(weight, SQRT2, lrmul) + bias * lrmul)
        i += 1
    return x


def truncate(w, dlatent_avg, num_layers, psi, cutoff):
    """Broadcast w to [N, L, D] and lerp towards ``dlatent_avg`` by psi in the layers < cutoff."""
    wplus = np.repeat(np.asarray(w, np.float64)[:, None], num_layers, axis=1) if w.ndim == 2 else w
    coefs = np.where(np.arange(num_layers) < cutoff, psi, 1.0)[None, :, None]
    return dlatent_avg + (wplus - dlatent_avg) * coefs


def synthesis(arrays, wplus, fused_scale="auto", noises=None):
    """w+ [N, L, D] -> images [N, channels, R, R] (raw), with the arrays' noise unless ``noises`` given."""
    num_layers = wplus.shape[1]
    log2 = (num_layers + 2) // 2
    a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}

    def epilogue(x, i, scope):
        noise = a[f"synthesis/noise{i}"] if noises is None else noises[i]
        x = x + noise * a[f"synthesis/{scope}/Noise/weight"][None, :, None, None]
        x = x + a[f"synthesis/{scope}/bias"][None, :, None, None]
        x = instance_norm(lrelu(x))
        return style_mod(
            x, wplus[:, i], a[f"synthesis/{scope}/StyleMod/weight"], a[f"synthesis/{scope}/StyleMod/bias"]
        )

    x = np.tile(a["synthesis/4x4/Const/const"], (len(wplus), 1, 1, 1))
    x = epilogue(x, 0, "4x4/Const")
    x = epilogue(conv2d(x, runtime_weight(a["synthesis/4x4/Conv/weight"], SQRT2)), 1, "4x4/Conv")
    for r in range(3, log2 + 1):
        scope = f"{2**r}x{2**r}"
        w = runtime_weight(a[f"synthesis/{scope}/Conv0_up/weight"], SQRT2)
        fused = fused_scale if fused_scale != "auto" else x.shape[2] * 2 >= 128
        x = fused_upscale_conv(x, w) if fused else conv2d(upscale2d(x), w)
        x = epilogue(blur(x), 2 * r - 4, f"{scope}/Conv0_up")
        x = epilogue(
            conv2d(x, runtime_weight(a[f"synthesis/{scope}/Conv1/weight"], SQRT2)),
            2 * r - 3,
            f"{scope}/Conv1",
        )
    rgb = conv2d(x, runtime_weight(a["synthesis/ToRGB_lod0/weight"], 1.0))
    return rgb + a["synthesis/ToRGB_lod0/bias"][None, :, None, None]


def generate(arrays, z, *, psi=0.7, cutoff=8, lrmul=0.01, fused_scale="auto"):
    """The whole ``Gs`` at lod 0 with fixed noise: z [N, latent] -> images [N, channels, R, R]."""
    num_layers = sum(1 for k in arrays if k.startswith("synthesis/noise"))
    w = mapping(arrays, z, lrmul)
    wplus = truncate(w, np.asarray(arrays["dlatent_avg"], np.float64), num_layers, psi, cutoff)
    return synthesis(arrays, wplus, fused_scale)
