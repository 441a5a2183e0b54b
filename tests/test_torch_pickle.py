"""The safe torch checkpoint reader: real torch.save files in both layouts, and files that try to run code."""

import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from advface.errors import WeightsError
from advface.networks.torch_pickle import UnsafePickleError, read_state_dict, read_torch_file


def _state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(3, 5))
    state = dict(net.state_dict())
    state["transposed"] = torch.randn(5, 6).t()  # a non-contiguous view of a storage
    state["sliced"] = torch.randn(4, 6)[1:3, ::2]  # offset and strides
    state["half"] = torch.randn(3).half()
    state["bfloat"] = torch.randn(4).bfloat16()
    state["int"] = torch.arange(7)
    return state


def _reference(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_both_torch_save_layouts_exactly(tmp_path, layout):
    state = _state()
    path = tmp_path / f"{layout}.pth"
    torch.save(state, path, _use_new_zipfile_serialization=layout == "zip")
    out = read_state_dict(path)
    assert list(out) == list(state)
    for name, tensor in state.items():
        ref = _reference(tensor)
        assert out[name].shape == ref.shape, name
        assert out[name].dtype == ref.dtype, name
        np.testing.assert_array_equal(out[name], ref, err_msg=name)


def test_training_checkpoint_and_dataparallel_prefix(tmp_path):
    state = _state()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}, "lr": 0.1}, path)
    out = read_state_dict(path)
    assert list(out) == list(state)
    whole = read_torch_file(path)
    assert whole["epoch"] == 3 and whole["lr"] == 0.1


def test_parameters_of_a_module_are_read(tmp_path):
    # torch.save of parameters (not detached tensors) goes through torch._utils._rebuild_parameter.
    layer = torch.nn.Linear(2, 3)
    path = tmp_path / "params.pt"
    torch.save({"w": layer.weight, "b": layer.bias}, path)
    out = read_torch_file(path)
    np.testing.assert_array_equal(out["w"], layer.weight.detach().numpy())


class _Evil:
    """An object whose unpickling runs a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_Evil, _EvalEvil])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "backbone.pth"
    state = {"conv1.weight": torch.zeros(2, 2), "evil": payload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=layout == "zip")
    assert not marker.exists()
    # Sanity: the file really would run code under a plain unpickler (torch.load without weights_only).
    with pytest.raises(
        UnsafePickleError, match=r"asks for the Python global (posix\.system|(__builtin__|builtins)\.eval)"
    ):
        read_state_dict(path)
    assert not marker.exists(), "the reader executed code from the file"
    torch.load(path, weights_only=False)
    assert marker.exists(), "the test payload is not actually malicious"


def test_pickled_module_is_refused_with_advice(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafePickleError, match=r"torch\.save\(model\.state_dict\(\)"):
        read_state_dict(path)


def test_malformed_files_give_one_clear_error(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(_state(), good)
    data = good.read_bytes()

    missing = tmp_path / "missing.pth"
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(missing)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError):
        read_state_dict(empty)

    text = tmp_path / "text.pth"
    text.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError):
        read_state_dict(text)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError):
        read_state_dict(truncated)

    # A zip whose storage blob is missing.
    no_blob = tmp_path / "no_blob.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(no_blob, "w") as dst:
        for item in src.namelist():
            if not item.endswith("/data/0"):
                dst.writestr(item, src.read(item))
    with pytest.raises(WeightsError, match="storage 0 is missing"):
        read_state_dict(no_blob)

    legacy = tmp_path / "legacy.pth"
    torch.save(_state(), legacy, _use_new_zipfile_serialization=False)
    cut = tmp_path / "legacy_cut.pth"
    cut.write_bytes(legacy.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="truncated"):
        read_state_dict(cut)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        read_state_dict(path)


def test_plain_pickle_with_global_is_refused(tmp_path):
    # A legacy-looking stream whose first pickle already names a global.
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(sys.exit))
    with pytest.raises(UnsafePickleError, match="sys.exit"):
        read_state_dict(path)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_shared_references_are_read_once_not_exponentially(tmp_path, layout):
    """``x = [x, x]`` nested 40 deep is a few hundred bytes in a pickle and 2^40 lists when unshared (the
    legacy layout's tensor pass took 3.6 s at depth 21 before, doubling per level)."""
    import subprocess
    import sys
    import time

    x = []
    for _ in range(40):
        x = [x, x]
    path = tmp_path / "bomb.pth"
    torch.save({"weight": torch.ones(2), "nested": x}, path, _use_new_zipfile_serialization=layout == "zip")
    assert path.stat().st_size < 10_000
    code = (
        "import sys; from advface.networks.torch_pickle import read_torch_file; "
        "obj = read_torch_file(sys.argv[1]); print(obj['weight'].tolist())"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 1.0]" and time.perf_counter() - start < 30
