"""Layering and the run-folder machinery."""

import subprocess
import sys

from advface.runs import ResultsTable, write_config


def test_core_never_imports_qt():
    code = (
        "import sys, advface, advface.cli, advface.zoo, advface.alignment, advface.verification, "
        "advface.demo, advface.networks.dlib_resnet; "
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'advface.gui'))]; print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_results_table_resumes_after_a_crash(tmp_path):
    table = ResultsTable(tmp_path / "results.tsv", ["key", "value"])
    table.add({"key": "a", "value": 1.5})
    table.add({"key": "b", "value": 2})
    with (tmp_path / "results.tsv").open("a") as f:  # killed in the middle of writing row c
        f.write("c\t3.")
    again = ResultsTable(tmp_path / "results.tsv", ["key", "value"])
    assert again.done == {"a", "b"}
    again.add({"key": "c", "value": 3.25})
    assert [r["key"] for r in again.rows()] == ["a", "b", "c"] and again.rows()[2]["value"] == "3.25"


def test_config_records_versions(tmp_path):
    folder = write_config(tmp_path / "run", "demo", {"out": tmp_path}, seed=3)
    text = (folder / "config.json").read_text()
    assert '"seed": 3' in text and '"tensorflow"' in text and '"keras"' in text


def test_converters_never_import_torch(tmp_path):
    """torch is a test-only dependency: reading a real .pth must not import it."""
    import torch

    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(2)}, path)
    code = (
        "import sys, advface.zoo, advface.training, advface.networks.torch_pickle as t, "
        "advface.networks.iresnet, advface.networks.inception_resnet_v1, advface.networks.openface, "
        "advface.networks.vgg, advface.networks.keras2_h5, advface.networks.siamese; "
        f"t.read_state_dict({str(path)!r}); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
