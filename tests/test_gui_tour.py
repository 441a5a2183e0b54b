"""The launcher tour's index and report section (the tour itself runs in `make demo`; every page it
drives has its own tests)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from advface.gui.tour import main, write_index  # noqa: E402

RECORDS = [
    {
        "page": "Home",
        "what": "self-check",
        "outcome": "passed | ok",
        "seconds": 1.0,
        "screenshot": "01-home.png",
    },
    {
        "page": "Dodging",
        "what": "AGN",
        "outcome": "success\nafter 45 steps",
        "seconds": 20.0,
        "screenshot": "04-d.png",
    },
]


def test_index_lists_every_page_and_the_report_section_is_replaced_not_repeated(tmp_path):
    out = tmp_path / "demo" / "gui"
    out.mkdir(parents=True)
    report = tmp_path / "demo" / "report.md"
    report.write_text("# advface demo\n\nearlier sections\n")
    index = write_index(out, RECORDS, report)
    table = index.read_text()
    assert "| [Home](01-home.png) | self-check | 1.0 | passed / ok |" in table
    assert "| [Dodging](04-d.png) | AGN | 20.0 | success after 45 steps |" in table
    text = report.read_text()
    assert text.startswith("# advface demo\n\nearlier sections\n") and "[Home](gui/01-home.png)" in text
    write_index(out, RECORDS[:1], report)  # a second tour replaces its section
    again = report.read_text()
    assert again.count("## Desktop launcher") == 1 and "Dodging" not in again
    assert again.startswith("# advface demo\n\nearlier sections\n")


def test_missing_samples_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "gui"), "--samples", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The tour needs the sample faces; missing:") and "make samples" in err
    assert len(err.splitlines()) == 1


def test_every_image_the_readme_shows_is_in_the_repository():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert sum("launcher-" in i for i in images) == 8  # one screenshot per launcher page
    missing = [i for i in images if not (root / i).is_file()]
    assert not missing, f"README links images that are not in the repository: {missing}"
