"""StyleGAN weights from NVIDIA's pickle and InterFaceGAN's .pth: read exactly, read safely, converted alike.

The files are written the way their authors wrote them (tests/stylegan_files.py): NVIDIA's protocol-4
pickle of ``dnnlib.tflib.network.Network`` objects with numpy 1.x arrays, and InterFaceGAN's state dict
with its transposes, from random weights of a small configuration (32x32, 8 mapping layers of 32).
"""

import functools
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import stylegan_files as sf
import torch

from advface.errors import AdvfaceError, WeightsError
from advface.networks import stylegan_convert
from advface.networks.stylegan_convert import (
    UnsafePickleError,
    convert_stylegan,
    convert_stylegan_ffhq,
    interfacegan_table,
    read_interfacegan_pth,
    read_official_pickle,
    read_stylegan,
)

FFHQ_MD5 = "5a20ed46ea6494a9e969db2f6b97a88a"


@pytest.fixture(scope="module")
def networks():
    return sf.official_networks(seed=0)


@pytest.fixture(scope="module")
def official(networks):
    return sf.flat(networks)


@pytest.fixture(scope="module")
def files(tmp_path_factory, networks, official):
    folder = tmp_path_factory.mktemp("stylegan")
    return {
        "pkl": sf.write_official_pickle(folder / "tiny.pkl", networks),
        "pth": sf.write_interfacegan_pth(folder / "tiny.pth", official),
    }


def _assert_same_arrays(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ---------------------------------------------------------------------------------------------------------
# Reading


def test_the_written_pickle_names_exactly_the_official_globals(files):
    data = files["pkl"].read_bytes()
    assert data[:2] == b"\x80\x04"  # protocol 4: pickle.HIGHEST_PROTOCOL of the TF1-era Python 3.6
    assert sf.pickle_globals(data) == sf.OFFICIAL_GLOBALS


def test_reads_the_official_pickle_bit_identically(files, official):
    gs = read_official_pickle(files["pkl"])
    _assert_same_arrays(gs.arrays, official)  # Gs's, not G's (which differ by one everywhere)
    assert gs.arrays["lod"].shape == () and gs.arrays["synthesis/lod"].dtype == np.float32
    assert gs.name == "Gs" and gs.source == "nvidia-pkl"
    assert gs.static_kwargs == {"num_channels": 3, "label_size": 0, **sf.TINY}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_interfacegan_pth_into_the_same_official_arrays(tmp_path, official, layout):
    path = sf.write_interfacegan_pth(tmp_path / "tiny.pth", official, layout=layout)
    gs = read_interfacegan_pth(path)
    _assert_same_arrays(gs.arrays, official)
    assert gs.source == "interfacegan-pth"
    assert gs.static_kwargs == {"resolution": 32, "label_size": 0, "num_channels": 3}
    assert read_stylegan(path).source == "interfacegan-pth"  # told apart by content


def test_interfacegan_fused_kernels_and_truncation_buffer(tmp_path, official):
    path = sf.write_interfacegan_pth(tmp_path / "f.pth", official, fused_scale=True, truncation=(0.5, 4))
    gs = read_interfacegan_pth(path)
    _assert_same_arrays(gs.arrays, official)
    assert gs.static_kwargs["fused_scale"] is True
    assert (gs.static_kwargs["truncation_psi"], gs.static_kwargs["truncation_cutoff"]) == (0.5, 4)


@pytest.mark.parametrize("resolution", [32, 1024])
def test_the_table_matches_interfacegans_module_tree(resolution):
    """Our table against the keys written from InterFaceGAN's modules; at 1024 it was also compared, once,
    with InterFaceGAN's own _STYLEGAN_PTH_VARS_TO_TF_VARS (144 names, all equal)."""
    table = {theirs: ours for theirs, (ours, _) in interfacegan_table(resolution).items()}
    layout = {"T": "dense", "conv": "conv", "as-is": "same"}
    for fused in ("auto", True, False):
        keys = {
            k: v for k, v in sf.interfacegan_keys(resolution, fused_scale=fused).items() if v[1] != "blur"
        }
        assert {k: table[k] for k in keys} == {k: v[0] for k, v in keys.items()}
        assert all(interfacegan_table(resolution)[k][1] == layout[v[1]] for k, v in keys.items())
        assert set(table.values()) == {v[0] for v in keys.values()}


def test_interfacegan_mismatches_are_named(tmp_path, official):
    state = sf.interfacegan_state(official)
    extra = dict(state, **{"synthesis.layer99.foo": torch.zeros(2)})
    del extra["synthesis.layer3.epilogue.bias"]
    torch.save(extra, tmp_path / "a.pth")
    with pytest.raises(
        WeightsError,
        match=r"Received: unknown=\['synthesis.layer99.foo'\], missing=\['synthesis.layer3.epilogue.bias'\]",
    ):
        read_interfacegan_pth(tmp_path / "a.pth")

    blurred = dict(state, **{"synthesis.layer2.blur.kernel": state["synthesis.layer2.blur.kernel"] * 2})
    torch.save(blurred, tmp_path / "b.pth")
    with pytest.raises(WeightsError, match=r"layer2.blur.kernel is not the normalised \[1, 2, 1\] blur"):
        read_interfacegan_pth(tmp_path / "b.pth")

    mixed = dict(state)
    mixed["synthesis.layer4.weight"] = mixed.pop("synthesis.layer4.conv.weight").permute(2, 3, 1, 0)
    torch.save(mixed, tmp_path / "c.pth")
    with pytest.raises(WeightsError, match=r"fuses some upsampling convolutions and not others"):
        read_interfacegan_pth(tmp_path / "c.pth")

    torch.save(torch.nn.Linear(2, 3).state_dict(), tmp_path / "d.pth")
    with pytest.raises(WeightsError, match="not an InterFaceGAN StyleGAN state dict.*Received: 2 tensors"):
        read_interfacegan_pth(tmp_path / "d.pth")


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "is empty"),
        ("html", "is an HTML page, not a pickle"),
        ("gif", r"is not a Python pickle \(it starts with b'GIF89a"),
        ("truncated", "is truncated or corrupt"),
        ("torch", "is a PyTorch checkpoint, not NVIDIA's pickle"),
        ("dict", r"does not hold StyleGAN's \(G, D, Gs\) networks. Received: a dict"),
        ("pair", r"Received: a tuple of 2"),
        ("pggan", r"Received: a Progressive GAN generator \(network 'Gs', build function 'G_paper'\)"),
        ("stylegan2", r"Received: a StyleGAN2 generator \(network 'Gs', build function 'G_main'\)"),
        ("missing", r"Gs has the components mapping and synthesis. Received: components=\['synthesis'\]"),
    ],
)
def test_files_that_are_not_stylegan_pickles(tmp_path, networks, files, case, match):
    path = tmp_path / "x.pkl"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "html":
        path.write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>")
    elif case == "gif":
        path.write_bytes(b"GIF89a" + bytes(100))
    elif case == "truncated":
        data = files["pkl"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "torch":
        path.write_bytes(files["pth"].read_bytes())
    elif case == "dict":
        sf.write_pickle({"Gs": np.zeros(3, np.float32)}, path)
    elif case == "pair":
        sf.write_pickle(sf.official_objects(networks)[:2], path)
    elif case == "pggan":
        sf.write_pickle(sf.official_objects(networks, func="G_paper"), path, network_module="tfutil")
    elif case == "stylegan2":
        sf.write_official_pickle(path, networks, func="G_main")
    elif case == "missing":
        g, d, gs = sf.official_objects(networks)
        del gs.__getstate__()["components"]["mapping"]
        sf.write_pickle((g, d, gs), path)
    with pytest.raises(WeightsError, match=match) as info:
        read_official_pickle(path)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(WeightsError, match=r"not found. Received: path='nope.pkl'"):
        read_official_pickle("nope.pkl")


# ---------------------------------------------------------------------------------------------------------
# Safety: pickles whose payload runs when loaded the ordinary way, and does not run here


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


# The official loader, in miniature: dnnlib.tflib.network.Network.__setstate__ exec()s build_module_src.
_OFFICIAL_DNNLIB = """
import types

class Network:
    def __setstate__(self, state):
        module = types.ModuleType("_tflib_network_import")
        exec(state["build_module_src"], module.__dict__)
        self.__dict__.update(state)
"""


def _load_the_ordinary_way(path, folder) -> None:
    """Load ``path`` with plain pickle.load in a fresh interpreter that has a (miniature) dnnlib."""
    package = folder / "site" / "dnnlib" / "tflib"
    package.mkdir(parents=True, exist_ok=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "network.py").write_text(_OFFICIAL_DNNLIB)
    site = str(folder / "site")
    code = f"import pickle, sys; sys.path.insert(0, {site!r}); pickle.load(open({str(path)!r}, 'rb'))"
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, timeout=120, cwd=folder)


@pytest.mark.parametrize("payload", ["build_module_src", "posix.system", "builtins.exec", "object array"])
def test_payloads_are_refused_and_never_run(tmp_path, networks, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    if payload == "build_module_src":
        src = f"open({str(marker)!r}, 'w').write('pwned')\n" + sf.BUILD_MODULE_SRC
        sf.write_official_pickle(path, networks, src=src)
    elif payload in ("posix.system", "builtins.exec"):
        evil = _System(marker) if payload == "posix.system" else _Exec(marker)
        sf.write_official_pickle(path, networks, extra_gs_kwargs={"evil": evil})
    else:
        bad = {**networks, "Gs": {**networks["Gs"], "dlatent_avg": np.array([_System(marker)], dtype=object)}}
        sf.write_official_pickle(path, bad)

    if payload == "build_module_src":
        gs = read_official_pickle(path)  # the source is data here: read, never run
        assert gs.arrays["dlatent_avg"].shape == (32,)
    else:
        expected = {"object array": "array of dtype 'O8'"}.get(
            payload, f"asks for the Python global {payload}"
        )
        with pytest.raises(UnsafePickleError, match=expected) as info:
            read_official_pickle(path)
        assert "nothing in the file was executed" in str(info.value)
        with pytest.raises(UnsafePickleError):
            convert_stylegan(path, "evil")  # no md5 to stop it first: the reader itself refuses
    assert not marker.exists()

    # The payload is real: loading the same bytes the ordinary way runs it.
    _load_the_ordinary_way(path, tmp_path)
    assert marker.exists()


def test_a_pickled_array_must_hold_its_bytes(tmp_path, networks):
    class Short(sf._Numpy1Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray) and obj.shape == (32,):
                return (
                    sf._reconstruct,
                    (np.ndarray, (0,), b"b"),
                    (1, (32,), obj.dtype, False, obj.tobytes()[:-4]),
                )
            return super().reducer_override(obj)

    path = tmp_path / "short.pkl"
    with sf._official_names(), open(path, "wb") as f:
        Short(f, protocol=4).dump(sf.official_objects(networks))
    with pytest.raises(WeightsError, match=r"shape \(32,\) and dtype float32 needs 128 bytes but holds 124"):
        read_official_pickle(path)


# ---------------------------------------------------------------------------------------------------------
# Safety: small files built to take exponential time or memory, or to change the reader itself


@functools.cache
def _chain(depth: int = 40, kind=list):
    """``x = [x, x]`` ``depth`` times: a few hundred bytes of pickle (memoised), 2**depth leaves unfolded.
    One object per kind, so that a file that holds it in many places holds it once."""
    x = kind()
    for _ in range(depth):
        x = kind((x, x))
    return x


class _ChainPickler(sf._Numpy1Pickler):
    """Puts a chain into the arrays of shape (32,) (``dlatent_avg``, the mapping biases) or the dtypes."""

    where = ""

    def persistent_id(self, obj):
        if self.where == "persistent id" and isinstance(obj, np.ndarray) and obj.shape == (32,):
            return _chain()
        return None

    def reducer_override(self, obj):
        if self.where == "dtype state" and isinstance(obj, np.dtype):
            return np.dtype, ("f4", False, True), _chain(kind=tuple)
        if isinstance(obj, np.ndarray) and obj.shape == (32,):
            recipe = sf._reconstruct, (np.ndarray, (0,), b"b")
            if self.where == "array state":
                return (*recipe, _chain())
            if self.where == "array shape":
                return (*recipe, (1, _chain(kind=tuple), obj.dtype, False, obj.tobytes()))
        return super().reducer_override(obj)


_READ_IN_A_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a regression fails, it does not eat the machine
from advface.errors import WeightsError
from advface.networks.stylegan_convert import read_official_pickle
start = time.perf_counter()
try:
    read_official_pickle(sys.argv[1])
    error = None
except WeightsError as exc:
    error = str(exc)
print(json.dumps({"seconds": time.perf_counter() - start, "error": error}))
"""


@pytest.mark.parametrize(
    "where, match",
    [
        ("static_kwargs", r"Gs's static_kwargs hold more than 100,000 values"),
        ("variables", r"the variables of Gs hold more than 100,000 values"),
        ("cycle", r"Gs's static_kwargs nest deeper than 64 levels"),
        ("name", r"a Network's name should be a string. Received: a list"),
        ("version", r"unknown Network pickle version. Received: version=\[\[\[\[\.\.\.\], \[\.\.\.\]\]"),
        ("components", r"mapping and synthesis. Received: components=\[\[\[\["),
        ("array state", r"Malformed array in StyleGAN pickle: state \[\[\[\["),
        ("array shape", r"Malformed StyleGAN pickle: array shape \(\(\(\("),
        ("dtype state", r"Malformed dtype in StyleGAN pickle: state \(\(\(\("),
        ("persistent id", r"holds a persistent reference \[\[\[\["),
    ],
)
def test_shared_chains_are_refused_in_bounded_time(tmp_path, networks, files, where, match):
    """A memoised chain x = [x, x] forty deep (2**40 leaves unfolded) anywhere the reader looks: refused
    within a second with one line, read in a child process so that a regression fails instead of hanging."""
    g, d, gs = sf.official_objects(networks)
    state = gs.__getstate__()
    if where == "static_kwargs":
        state["static_kwargs"]["chain"] = _chain()
    elif where == "variables":
        state["variables"].append(("chain", _chain()))
    elif where == "cycle":
        cycle = []
        cycle.append(cycle)
        state["static_kwargs"]["cycle"] = cycle
    elif where in ("name", "version", "components"):
        state[where] = _chain()
    pickler = type("Pickler", (_ChainPickler,), {"where": where})
    path = sf.write_pickle((g, d, gs), tmp_path / "chain.pkl", pickler=pickler)
    assert path.stat().st_size < files["pkl"].stat().st_size + 2_000  # a few hundred bytes of chain

    child = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_CHILD, str(path)], capture_output=True, text=True, timeout=20
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["error"] is not None, "read without complaint"
    assert result["seconds"] < 1.0 and "\n" not in result["error"], result
    assert len(result["error"]) < 600, result["error"]
    assert re.search(match, result["error"]), result["error"]


@pytest.mark.parametrize("value", ["_reconstruct", "dtype", "ndarray", "network"])
def test_settings_hold_only_plain_values(tmp_path, networks, value):
    """The reader's own globals (and networks) smuggled into static_kwargs are a malformed file."""
    smuggled = {
        "_reconstruct": sf._reconstruct,  # pickled as numpy.core.multiarray._reconstruct
        "dtype": np.dtype,
        "ndarray": np.ndarray,
        "network": sf.Network("N", "G_style", {}),
    }[value]
    path = sf.write_official_pickle(tmp_path / "x.pkl", networks, extra_gs_kwargs={"evil": smuggled})
    with pytest.raises(WeightsError, match=r"Gs's static_kwargs hold a \w+, not a plain value") as info:
        read_official_pickle(path)
    assert "\n" not in str(info.value)


class _SharedBytesPickler(sf._Numpy1Pickler):
    """Every array of 1 MB gets the same bytes object: one copy in the file, a reference (~30 bytes) each."""

    data = bytes(1 << 20)

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray) and obj.nbytes == len(self.data):
            return sf._reconstruct, (np.ndarray, (0,), b"b"), (1, obj.shape, obj.dtype, False, self.data)
        return super().reducer_override(obj)


def test_arrays_sharing_one_buffer_are_refused_before_they_are_allocated(tmp_path, networks, files):
    g, d, gs = sf.official_objects(networks)
    view = np.broadcast_to(np.float32(0), (1 << 18,))  # 1 MB of float32, no memory here
    gs.__getstate__()["variables"] += [(f"big{i}", view[:]) for i in range(1000)]  # 1,000 arrays, 1 GB
    path = sf.write_pickle((g, d, gs), tmp_path / "shared.pkl", pickler=_SharedBytesPickler)
    size = path.stat().st_size
    assert size < files["pkl"].stat().st_size + (1 << 20) + 50_000  # the tiny file, 1 MB, ~40 bytes an array

    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(
            WeightsError, match=r"arrays claim at least \d[\d,]* bytes but the file has only"
        ) as info:
            read_official_pickle(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"has only {size:,} bytes: malformed or malicious" in str(info.value)
    assert "\n" not in str(info.value)
    assert peak < 4 * size + (8 << 20), f"peak {peak / 1e6:.0f} MB"  # nowhere near the 1 GB claimed
    assert seconds < 2.0


def _build_on_global(module: str, name: str) -> bytes:
    """``BUILD(({'evil': 1}, {'__class__': numpy.dtype}))`` on the global ``module.name``: a plain unpickler
    writes into its ``__dict__`` and then turns it into (our stand-in for) a dtype, for the whole process."""

    def text(s: str) -> bytes:
        return pickle.BINUNICODE + struct.pack("<I", len(s)) + s.encode()

    return b"".join(
        [
            pickle.PROTO + b"\x02",
            pickle.GLOBAL + f"{module}\n{name}\n".encode(),
            pickle.EMPTY_DICT + text("evil") + pickle.BININT1 + b"\x01" + pickle.SETITEM,
            pickle.EMPTY_DICT + text("__class__") + pickle.GLOBAL + b"numpy\ndtype\n" + pickle.SETITEM,
            pickle.TUPLE2,
            pickle.BUILD,
            pickle.STOP,
        ]
    )


def _globals_now() -> dict:
    """What each global of the reader is, and its attributes, to see that no file changed them."""
    return {
        key: (type(value), dict(getattr(value, "__dict__", {})))
        for key, value in stylegan_convert._OfficialUnpickler.SAFE.items()
    }


@pytest.mark.parametrize(
    "module, name",
    [
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        ("dnnlib.tflib.network", "Network"),
        ("dnnlib.util", "EasyDict"),
    ],
)
def test_a_pickle_cannot_change_the_reader(tmp_path, files, official, module, name):
    before = _globals_now()
    path = tmp_path / "build.pkl"
    path.write_bytes(_build_on_global(module, name))
    with pytest.raises(WeightsError, match=r"Malformed StyleGAN pickle: BUILD on a global") as info:
        read_official_pickle(path)
    assert "\n" not in str(info.value) and "nothing was executed" in str(info.value)
    assert _globals_now() == before
    _assert_same_arrays(read_official_pickle(files["pkl"]).arrays, official)  # still reads, same process


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_reads_every_protocol_nvidia_could_have_written(tmp_path, networks, official, protocol):
    path = sf.write_official_pickle(tmp_path / f"p{protocol}.pkl", networks, protocol=protocol)
    data = path.read_bytes()
    assert data[:2] == bytes([0x80, protocol])
    codecs = {("_codecs", "encode")} if protocol == 2 else set()  # protocol 2 has no bytes opcode
    assert sf.pickle_globals(data) == sf.OFFICIAL_GLOBALS | codecs
    gs = read_official_pickle(path)
    _assert_same_arrays(gs.arrays, official)
    assert gs.static_kwargs == {"num_channels": 3, "label_size": 0, **sf.TINY}


# ---------------------------------------------------------------------------------------------------------
# Conversion (networks/stylegan.py)


def test_pkl_and_pth_give_the_same_images(files):
    from advface.networks.stylegan import config_from_official, load_official, stylegan

    z = np.random.default_rng(5).standard_normal((2, 32)).astype(np.float32)
    images = {}
    for kind, path in files.items():
        gs = read_stylegan(path)
        model = load_official(stylegan(config_from_official(gs.arrays, gs.static_kwargs)), gs.arrays)
        images[kind] = np.asarray(model(z))
        np.testing.assert_array_equal(np.asarray(model(z)), images[kind])  # fixed noise: deterministic
    assert images["pkl"].shape == (2, 32, 32, 3) and np.std(images["pkl"]) > 0.1
    np.testing.assert_allclose(images["pth"], images["pkl"], atol=1e-5, rtol=0)


def test_fused_pth_matches_a_fused_pickle(tmp_path, networks, official):
    from advface.networks.stylegan import config_from_official, load_official, stylegan

    pkl = sf.write_official_pickle(
        tmp_path / "f.pkl", networks, static_kwargs={**sf.TINY, "fused_scale": True}
    )
    pth = sf.write_interfacegan_pth(tmp_path / "f.pth", official, fused_scale=True)
    z = np.random.default_rng(6).standard_normal((1, 32)).astype(np.float32)
    out = []
    for path in (pkl, pth):
        gs = read_stylegan(path)
        config = config_from_official(gs.arrays, gs.static_kwargs)
        assert config.fused_scale is True
        out.append(np.asarray(load_official(stylegan(config), gs.arrays)(z)))
    np.testing.assert_allclose(out[1], out[0], atol=1e-5, rtol=0)


def test_api_converts_to_a_custom_name_and_reloads_equal(files, models):
    from advface.networks.stylegan import StyleGANConfig, stylegan
    from advface.savedmodels import read_metadata, register

    result = convert_stylegan(files["pkl"], "tiny-stylegan")
    assert result.kind == "generator" and result.path == models / "tiny-stylegan.weights.h5"
    assert result.reload_max_diff == 0.0 and result.path.is_file()
    meta = read_metadata("tiny-stylegan")
    assert meta["source"] == "tiny.pkl" and meta["source_format"] == "nvidia-pkl"
    assert meta["source_md5"] == sf.md5(files["pkl"]) and meta["config"]["fmap_max"] == 64
    assert register()["tiny-stylegan.weights.h5"]["sha256"] == result.sha256

    pth = convert_stylegan(files["pth"], "tiny-stylegan-pth")
    assert pth.reload_max_diff == 0.0
    assert read_metadata("tiny-stylegan-pth")["config"] == meta["config"]
    a = stylegan(StyleGANConfig.from_dict(meta["config"]), weights="tiny-stylegan")
    b = stylegan(StyleGANConfig.from_dict(meta["config"]), weights="tiny-stylegan-pth")
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, err_msg=x.path)
    z = np.random.default_rng(7).standard_normal((1, 32)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(a(z)), np.asarray(b(z)), atol=1e-5, rtol=0)

    with pytest.raises(AdvfaceError, match="tiny-stylegan.weights.h5 exists. Pass --overwrite"):
        convert_stylegan(files["pkl"], "tiny-stylegan")


def test_ffhq_hook_checks_md5_and_shapes(files, models):
    with pytest.raises(WeightsError, match=rf"md5 {FFHQ_MD5}\). Received: md5={sf.md5(files['pkl'])}"):
        convert_stylegan_ffhq(files["pkl"])
    with pytest.raises(WeightsError, match=r"tiny.pth does not hold the stylegan-ffhq configuration"):
        convert_stylegan_ffhq(files["pth"])
    assert not models.exists() or not any(models.iterdir())


def test_ffhq_hook_reads_a_pickle_once_its_md5_matches(files, models, monkeypatch):
    import advface.generators

    monkeypatch.setattr(advface.generators, "STYLEGAN_FFHQ_MD5", sf.md5(files["pkl"]))
    with pytest.raises(WeightsError, match=r"tiny.pkl does not hold the stylegan-ffhq configuration"):
        convert_stylegan_ffhq(files["pkl"])


@pytest.mark.slow
def test_an_ffhq_sized_interfacegan_file_converts_through_the_cli(tmp_path, models, capsys):
    ffhq = {"resolution": 1024, "latent_size": 512, "dlatent_size": 512, "mapping_fmaps": 512}
    arrays = sf.flat(sf.official_networks(3, **ffhq, fmap_base=8192, fmap_max=512))
    path = sf.write_interfacegan_pth(tmp_path / "stylegan_ffhq.pth", arrays)  # fused from 128x128 up
    code, out, err = _cli(capsys, "zoo", "convert", "stylegan-ffhq", path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["reload_max_diff"] == 0.0 and result["parameters"] == 29_008_723
    code, out, _ = _cli(capsys, "zoo", "list", "--json")
    assert {r["name"]: r["available"] for r in json.loads(out)}["stylegan-ffhq"] is True


# ---------------------------------------------------------------------------------------------------------
# The zoo and the CLI


def _cli(capsys, *args) -> tuple[int, str, str]:
    from advface.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("advface: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_refuses_the_tiny_pickle_on_md5(files, tmp_path):
    models = tmp_path / "models"
    result = subprocess.run(
        [sys.executable, "-m", "advface.cli", "zoo", "convert", "stylegan-ffhq", str(files["pkl"])],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ADVFACE_MODELS": str(models)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    line = _one_line(result.stderr)
    assert f"karras2019stylegan-ffhq-1024x1024.pkl (md5 {FFHQ_MD5})" in line and "Received: md5=" in line
    assert not models.exists() or not any(models.iterdir())


def test_cli_errors_are_one_line_and_write_nothing(files, models, tmp_path, capsys):
    code, _, err = _cli(capsys, "zoo", "convert", "stylegan-ffhq", tmp_path / "nope.pkl")
    assert code == 2 and "File not found. Received: file=" in _one_line(err)

    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, tmp_path / "evil.pth")
    code, _, err = _cli(capsys, "zoo", "convert", "stylegan-ffhq", tmp_path / "evil.pth")
    assert code == 2 and "asks for the Python global posix.system" in _one_line(err)
    assert not marker.exists()

    (tmp_path / "labels.txt").write_text("alice\nbob\n")
    code, _, err = _cli(
        capsys, "zoo", "convert", "stylegan-ffhq", files["pth"], "--labels", tmp_path / "labels.txt"
    )
    assert code == 2 and "labels are for classifiers" in _one_line(err)
    assert not models.exists() or not any(models.iterdir())


def test_zoo_routes_generators(files, models):
    from advface.zoo import convert_model

    with pytest.raises(WeightsError, match="Received: md5="):
        convert_model("stylegan-ffhq", files["pkl"])
    with pytest.raises(AdvfaceError, match=r"digiface-dcgan has no converter.*Convertible: .*stylegan-ffhq"):
        convert_model("digiface-dcgan", files["pkl"])
    with pytest.raises(AdvfaceError, match=r"dlib-resnet has no converter.*stylegan-ffhq"):
        convert_model("dlib-resnet", files["pkl"])


def test_zoo_list_shows_the_generators(models, capsys):
    code, out, _ = _cli(capsys, "zoo", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["dlib-resnet"]["kind"] == "embedding"
    stylegan = rows["stylegan-ffhq"]
    assert stylegan["kind"] == "generator" and stylegan["available"] is False
    assert (
        stylegan["resolution"] == 1024 and "karras2019stylegan-ffhq-1024x1024.pkl" in stylegan["convert_from"]
    )
    code, out, _ = _cli(capsys, "zoo", "list")
    assert "stylegan-ffhq  [generator, not converted yet]" in out
