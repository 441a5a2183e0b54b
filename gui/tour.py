"""A tour of the launcher: open every page, run a real job on it, and save a screenshot of the window.

    python -m advface.gui.tour runs/demo/gui --report runs/demo/report.md

``make demo`` runs it after the batch demo, so the demo's run folder shows the desktop application
too; the README's screenshots are made with it. It needs no display: the window is drawn offscreen
(``QT_QPA_PLATFORM=offscreen`` unless another platform is set). The jobs are the ones a person would
start with the buttons, through the same page methods, on the sample faces and the offline models; their
run folders go under ``OUT/runs``, and the launcher's settings to ``OUT/settings.ini`` (the user's own
settings are not touched).

Writes ``OUT/<nn>-<page>.png`` per page and ``OUT/README.md`` (what ran on each page, how long it
took, the outcome); with ``--report FILE`` also a "Desktop launcher" section in that Markdown file
(replaced, not repeated, when the tour runs again).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from advface.errors import AdvfaceError
from advface.runs import write_text_atomic

_MARK = ("<!-- launcher-tour -->", "<!-- /launcher-tour -->")


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Run the Qt event loop until ``condition()`` holds (polled every 20 ms); an error after
    ``timeout_s``."""
    from PySide6.QtCore import QEventLoop, QTimer

    if condition():
        return
    loop, timer = QEventLoop(), QTimer()
    deadline = time.monotonic() + timeout_s
    timer.setInterval(20)
    timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    timer.start()
    loop.exec()
    timer.stop()
    if not condition():
        raise AdvfaceError(f"The launcher tour's {what} did not finish within {timeout_s:.0f} s.")


def _video(path: Path, glasses: np.ndarray, photos, aligner) -> Path:
    """A short MJPG video: each photo bare, then wearing ``glasses`` (a person in front of a camera)."""
    import cv2

    from advface.glasses.workflow import wear_on_photo
    from advface.images import load_image, to_uint8

    h, w = 480, 640
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (w, h))
    for photo in photos:
        image = load_image(photo)
        for frame in (image, wear_on_photo(image, glasses, aligner=aligner)):
            scale = min(w / frame.shape[1], h / frame.shape[0])
            size = (int(frame.shape[1] * scale), int(frame.shape[0] * scale))
            canvas = np.zeros((h, w, 3), np.uint8)
            canvas[: size[1], : size[0]] = cv2.resize(to_uint8(frame), size, interpolation=cv2.INTER_AREA)
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def run_tour(
    out, *, samples=None, timeout_s: float = 900.0, log: Callable[[str], None] = print
) -> list[dict]:
    """Run the tour into ``out`` (see the module docstring); returns one record per page."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from advface.demo import default_samples, sample_people
    from advface.gui.app import MainWindow

    out = Path(out)
    samples = Path(samples) if samples is not None else default_samples()
    obama = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    biden = samples / "biden.jpg"
    missing = [str(p) for p in [*obama, biden] if not p.is_file()]
    if missing:
        raise AdvfaceError(
            f"The tour needs the sample faces; missing: {', '.join(missing)}. Run `make samples`."
        )
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("advface")
    settings = QSettings(str(out / "settings.ini"), QSettings.Format.IniFormat)
    for key in ("dodging/runs_root", "impersonation/runs_root", "physical/runs_root", "semantic/runs"):
        settings.setValue(key, str(runs))
    settings.setValue("recognition/captures", str(runs / "captures"))
    window = MainWindow(settings)
    window.resize(1320, 980)
    window.show()
    pages = {type(p).title: p for p in window.pages}
    records: list[dict] = []

    def visit(
        title: str,
        what: str,
        start: Callable[[object], bool],
        outcome: Callable[[object], str],
        height: int = 980,
    ) -> None:
        page = pages[title]
        window.launcher.setCurrentRow(window.pages.index(page))
        app.processEvents()
        t0 = time.perf_counter()
        log(f"launcher tour: {title}: {what} ...")
        if not start(page):
            raise AdvfaceError(f"The launcher tour could not start {what} on the {title} page.")
        _wait(page.is_idle, timeout_s, f"{title} page")
        message = getattr(page, "message", None)
        if message is not None and message.text() and "Stopped" not in message.text():
            log(f"launcher tour: {title}: the page says: {message.text()}")
        app.processEvents()
        window.resize(window.size().expandedTo(window.minimumSizeHint()).width(), height)
        app.processEvents()
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        shot = out / f"{len(records) + 1:02d}-{slug}.png"
        if not window.grab().save(str(shot)):
            raise AdvfaceError(f"Could not write the screenshot {shot}. Check that the folder is writable.")
        records.append(
            {
                "page": title,
                "what": what,
                "outcome": outcome(page),
                "seconds": round(time.perf_counter() - t0, 1),
                "screenshot": shot.name,
            }
        )

    # 1. Home: the self-check.
    visit(
        "Home",
        "the self-check (align and embed a sample face)",
        lambda p: p.run_self_check(),
        lambda p: p.result_label.text(),
    )

    # 2. Face recognition: verify two photos of Obama, then identify one against the sample people.
    def recognise(page) -> bool:
        for slot, path in (("A", obama[0]), ("B", obama[1])):
            if not page.open_image(slot, path):
                return False
            _wait(page.is_idle, timeout_s, "opening a photo")
        if not page.verify():
            return False
        _wait(page.is_idle, timeout_s, "verification")
        return page.identify(sample_people(samples, out / "people"), probe="B", k=3)

    visit(
        "Face recognition",
        "verify obama.jpg against obama2.jpg, identify obama2.jpg among the sample people",
        recognise,
        lambda p: f"{p.verdict.text()}; {p.identity.text()}",
    )

    # 3. Eyeglasses: frames from the generator, one tried on Obama.
    def eyeglasses(page) -> bool:
        _wait(lambda: page.is_idle() and page.frames is not None, timeout_s, "loading the eyeglass generator")
        return page.open_image(obama[0])

    visit(
        "Eyeglasses",
        "sample frames and try one on obama.jpg",
        eyeglasses,
        lambda p: f"{len(p.frames)} frames sampled (seed {p.seed}), frame {p.selected + 1} worn",
    )

    # 4-5. Dodging and impersonation with the AGN attack (the demo's settings).
    visit(
        "Dodging",
        "AGN dodging on Obama's three photos (at most 400 steps, stops at success)",
        lambda p: p.add_photos(obama) and p.start_attack(steps=400),
        lambda p: p.verdict.text(),
    )
    dodge = pages["Dodging"].last_run
    visit(
        "Impersonation",
        "AGN impersonation of Biden by Obama's photos (60 steps)",
        lambda p: p.add_photos(obama) and p.add_targets([biden]) and p.start_attack(steps=60),
        lambda p: p.verdict.text(),
    )

    # 6. Physical test: print the dodging frames, then check a video of Obama with and without them.
    def physical(page) -> bool:
        if dodge is None:
            raise AdvfaceError("The tour's dodging run did not finish; the physical test needs its frames.")
        if not page.print_template(out / "runs" / "dodging-frames", run_folder=dodge.out):
            return False
        _wait(page.is_idle, timeout_s, "printing the frames")
        from advface.images import load_image

        glasses = load_image(dodge.out / "glasses.png")
        video = _video(runs / "wearing.avi", glasses, obama, pages["Dodging"].aligner)
        page.set_source(video=video)
        page.goal_combo.setCurrentText("dodge")
        page.set_photos(obama)
        return page.start_check()

    visit(
        "Physical test",
        "print the dodging frames; check a video of Obama without and with them, frame by frame",
        physical,
        lambda p: p.tally.text(),
    )

    # 7. Pixel attacks: PGD at 4/255.
    visit(
        "Pixel attacks",
        "PGD (4/255, 10 steps) dodging on obama.jpg",
        lambda p: p.open_image(obama[0]) and p.run_attack(attack="pgd", epsilon="4/255", steps=10),
        lambda p: p.verdict.text(),
    )

    # 8. Semantic robustness: a gallery, one edited face, FAB-t over every identity with the ranking.
    def semantic(page) -> bool:
        if not page.generate(n=20, seed=0):
            return False
        _wait(page.is_idle, timeout_s, "generating identities")
        page.select(2)
        _wait(page.is_idle, timeout_s, "selecting an identity")
        if not page.run_fab(steps=5, restarts=1, targets=2, scope="selected identity"):
            return False
        _wait(page.is_idle, timeout_s, "FAB-t on one identity")
        slider, _ = page.sliders["yaw"]
        slider.setValue(slider.maximum())
        _wait(page.is_idle, timeout_s, "rendering the edited face")
        return page.run_fab(steps=5, restarts=1, targets=2, scope="all identities")

    visit(
        "Semantic robustness",
        "20 digiface-dcgan identities; FAB-t on identity 2; yaw at its budget; FAB-t on all, ranked",
        semantic,
        lambda p: p.result_text.text(),
        height=1180,
    )
    window.close()
    return records


def write_index(out: Path, records: list[dict], report: Path | None = None) -> Path:
    """``OUT/README.md``: a table of the pages, what ran, the outcome and the screenshot; and the same
    section in ``report`` (between markers, replaced on a re-run)."""
    lines = [
        "## Desktop launcher",
        "",
        "Each page of `advface gui` with a real job run on it (drawn offscreen by "
        "`python -m advface.gui.tour`).",
        "",
        "| page | what ran | seconds | outcome |",
        "|---|---|---|---|",
    ]
    for r in records:
        outcome = " ".join(str(r["outcome"]).split()).replace("|", "/")
        lines.append(f"| [{r['page']}]({r['screenshot']}) | {r['what']} | {r['seconds']} | {outcome} |")
    table = "\n".join(lines) + "\n"
    index = Path(out) / "README.md"
    write_text_atomic(index, table)
    if report is not None and Path(report).is_file():
        report = Path(report)
        rel = os.path.relpath(out, report.parent)
        section = re.sub(r"\]\(([^)]+\.png)\)", lambda m: f"]({rel}/{m.group(1)})", table)
        text = report.read_text()
        block = f"{_MARK[0]}\n{section}{_MARK[1]}\n"
        pattern = re.compile(re.escape(_MARK[0]) + r".*?" + re.escape(_MARK[1]) + r"\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip("\n") + "\n\n" + block
        write_text_atomic(report, text)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m advface.gui.tour",
        description="Run a real job on every page of the launcher offscreen and save a screenshot of each.",
        epilog="Example: python -m advface.gui.tour runs/demo/gui --report runs/demo/report.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="folder for the screenshots, README.md and the pages' runs")
    parser.add_argument("--report", type=Path, help="a Markdown report to add the launcher section to")
    parser.add_argument("--samples", type=Path, help="the sample faces (default: data/samples)")
    args = parser.parse_args(argv)
    try:
        records = run_tour(args.out, samples=args.samples)
        index = write_index(args.out, records, args.report)
    except AdvfaceError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"launcher tour: {len(records)} pages, screenshots and {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
