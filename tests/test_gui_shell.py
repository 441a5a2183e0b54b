"""The desktop launcher's shell: the window, the worker running real advface jobs off the GUI thread,
Stop, failures in a dialog, and a GUI that keeps ticking during an attack. Offscreen (QT_QPA_PLATFORM)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui_ticks import TimerTicks  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from advface.attacks import Dodge  # noqa: E402
from advface.attacks.pgd import PGD  # noqa: E402
from advface.errors import AdvfaceError  # noqa: E402
from advface.gui.app import PAGES, HomePage, MainWindow, SelfCheck, main  # noqa: E402
from advface.gui.worker import Worker  # noqa: E402
from advface.progress import Progress  # noqa: E402

JOB_TIMEOUT_MS = 300_000


@pytest.fixture()
def window(qtbot, settings):
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.worker.shutdown()


@pytest.fixture(scope="module")
def dlib():
    from advface.zoo import load_model

    return load_model("dlib-resnet")


@pytest.fixture()
def attack_job(face_chips, dlib):
    """A real job: PGD dodging on two dlib-resnet chips, ``attack_job(steps)`` -> (fn, kwargs)."""
    _, chips = face_chips("dlib")
    chips = chips[:2]
    goal = Dodge(dlib.embed(chips), paired=True)

    def make(steps: int):
        def job(*, progress, images):
            return PGD(epsilon=4 / 255, steps=steps)(dlib, images, goal, progress=progress, seed=0)

        return job, {"images": chips}

    return make


def test_window_opens_on_the_home_page(window, artifacts):
    assert [cls.title for cls in PAGES][0] == "Home"
    assert isinstance(window.current_page, HomePage)
    assert window.launcher.count() == len(PAGES) and window.launcher.currentItem().text() == "Home"
    assert window.state.text() == "Ready" and window.current_page.run_button.isEnabled()
    path = artifacts / "gui_home.png"
    assert window.grab().save(str(path)) and path.stat().st_size > 0


def test_every_page_opens_from_the_launcher(window, qtbot, artifacts):
    """Each page in the launcher list shows when clicked, with its title, and is screenshotted inside the
    window (test-artifacts/gui_window_<page>.png); the page-specific tests screenshot pages with results."""
    window.resize(1280, 900)
    seen = []
    for row, cls in enumerate(PAGES):
        qtbot.mouseClick(
            window.launcher.viewport(),
            Qt.MouseButton.LeftButton,
            pos=window.launcher.visualItemRect(window.launcher.item(row)).center(),
        )
        page = window.current_page
        assert type(page) is cls and window.launcher.currentItem().text() == cls.title
        assert page.isVisible()
        slug = cls.title.lower().replace(" ", "_")
        path = artifacts / f"gui_window_{slug}.png"
        assert window.grab().save(str(path)) and path.stat().st_size > 0
        seen.append(cls.title)
    assert len(set(seen)) == len(PAGES) >= 4


def test_settings_keep_geometry_and_the_last_page(qtbot, settings):
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(700, 500)
    w.close()
    assert settings.value("page") == "Home" and settings.value("geometry") is not None
    again = MainWindow(settings)
    qtbot.addWidget(again)
    assert again.size().width() == 700 and isinstance(again.current_page, HomePage)


def test_home_page_self_check_embeds_a_sample_face(window, qtbot, samples):
    page = window.current_page
    steps = []
    window.worker.progress.connect(lambda p: steps.append(p.step))
    with qtbot.waitSignal(window.worker.finished, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
        assert not page.run_button.isEnabled() and page.stop_button.isEnabled()
    result = blocker.args[0]
    assert isinstance(result, SelfCheck) and result.dimensions == 128 and result.norm > 0
    assert steps == [0, 1, 2, 3, 4]
    assert "Self-check passed" in page.result_label.text() and page.progress_bar.value() == 4
    assert page.run_button.isEnabled() and not page.stop_button.isEnabled()
    assert "finished" in window.state.text()


def test_worker_runs_a_real_attack_and_reports_progress_in_order(qtbot, attack_job):
    worker = Worker()
    events, busy = [], []
    worker.progress.connect(lambda p: events.append(("progress", p.step, p.total, p.stage)))
    worker.finished.connect(lambda r: events.append(("finished", r)))
    worker.busy.connect(busy.append)
    job, kwargs = attack_job(20)
    with qtbot.waitSignal(worker.finished, timeout=JOB_TIMEOUT_MS):
        assert worker.start(job, **kwargs)
        assert worker.is_busy
    steps = [e[1] for e in events[:-1]]
    assert steps == list(range(1, 21)) and all(e[2] == 20 and e[3] == "PGD" for e in events[:-1])
    kind, result = events[-1]
    assert kind == "finished" and result.images.shape == kwargs["images"].shape
    assert busy == [True, False] and not worker.is_busy


def test_starting_while_busy_is_refused(qtbot, attack_job):
    worker = Worker()
    job, kwargs = attack_job(5)
    second = []
    with qtbot.waitSignal(worker.finished, timeout=JOB_TIMEOUT_MS):
        assert worker.start(job, **kwargs)
        second.append(worker.start(job, **kwargs))
    assert second == [False]
    with qtbot.waitSignal(worker.finished, timeout=JOB_TIMEOUT_MS):  # idle again: accepted
        assert worker.start(job, **kwargs)


def test_stop_ends_a_running_attack_early(qtbot, attack_job):
    worker = Worker()
    steps, finished = [], []
    worker.finished.connect(finished.append)

    def on_progress(p):
        steps.append(p.step)
        if p.step == 3:
            worker.stop()

    worker.progress.connect(on_progress)
    job, kwargs = attack_job(200)
    with qtbot.waitSignal(worker.cancelled, timeout=JOB_TIMEOUT_MS):
        assert worker.start(job, **kwargs)
    assert 3 <= len(steps) < 200 and not finished and not worker.is_busy


def test_a_failing_job_shows_its_message_in_a_dialog(window, qtbot):
    def job(*, progress, name):
        progress(Progress(step=1, total=2, stage="load"))
        raise AdvfaceError(f"Unknown model. Received: name={name!r}. Known: dlib-resnet.")

    with qtbot.waitSignal(window.worker.failed, timeout=10_000) as blocker:
        assert window.worker.start(job, name="nope")
    message, details = blocker.args
    assert message == "Unknown model. Received: name='nope'. Known: dlib-resnet."
    assert "Traceback" in details and "AdvfaceError" in details
    box = window.error_box
    assert box is not None and box.isVisible()
    assert message in box.text() and box.detailedText() == details
    assert "failed" in window.state.text()
    box.close()
    qtbot.waitUntil(lambda: window.error_box is None)

    def bug(*, progress):
        raise ZeroDivisionError("division by zero\nsecond line")

    with qtbot.waitSignal(window.worker.failed, timeout=10_000) as blocker:
        window.worker.start(bug)
    assert blocker.args[0] == "ZeroDivisionError: division by zero"
    window.error_box.close()


def test_gui_keeps_ticking_during_an_attack(qtbot, attack_job):
    """A 10 ms timer in the GUI thread never waits more than 100 ms while PGD runs on the worker, from the
    first run (which traces the compiled step) to a second one."""
    worker = Worker()
    job, kwargs = attack_job(40)
    with TimerTicks() as ticks:
        for run in ("first", "second"):  # the first traces the step, the second reuses it
            with ticks.run(run), qtbot.waitSignal(worker.finished, timeout=JOB_TIMEOUT_MS):
                worker.start(job, **kwargs)
    print(ticks.report())
    for run in ("first", "second"):
        assert ticks.count(run) > 10 and ticks.max_gap(run) < 0.1


def test_gui_command_help(capsys):
    from advface.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_:
        cli_main(["gui", "--help"])
    assert exit_.value.code == 0 and "desktop launcher" in capsys.readouterr().out
    assert callable(main)


def test_pages_ignore_each_others_jobs_and_a_refused_start_keeps_the_running_job(window, qtbot):
    """One worker serves every page: while the home page's self-check runs, the other pages' run buttons
    are disabled, their hooks never see its progress or result, and a second start (by any page, this
    one included) is refused without disturbing the running job."""
    home = window.pages[0]
    others = window.pages[1:]
    seen = {type(p).title: [] for p in others}
    for page in others:
        title = type(page).title
        for hook in ("on_progress", "on_finished", "on_failed", "on_cancelled"):
            original = getattr(page, hook)

            def spy(*args, _title=title, _hook=hook, _original=original):
                seen[_title].append(_hook)
                return _original(*args)

            setattr(page, hook, spy)
    with qtbot.waitSignal(window.worker.finished, timeout=JOB_TIMEOUT_MS):
        assert home.run_self_check()
        assert not home.start_job(lambda *, progress: None, job="second")  # refused: ours is running
        assert home.running and home.job == "job"
        for page in others:
            assert not page.start_job(lambda *, progress: None)
            assert not page.running and page.job is None
            assert "the Home page" in page.busy_message()
    assert "Self-check passed" in home.result_label.text()
    assert all(not hooks for hooks in seen.values()), seen
    assert all(p.is_idle() for p in window.pages)


def test_closing_waits_for_a_job_whose_step_outlasts_the_wait(qtbot, settings, monkeypatch):
    import threading

    import advface.gui.app as app

    monkeypatch.setattr(app, "CLOSE_WAIT_MS", 50)
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    release = threading.Event()

    def long_step(*, progress):
        release.wait(20)  # one long step: Stop takes effect at the next progress call
        progress(Progress(1, 1))

    cancelled = []
    w.worker.cancelled.connect(lambda: cancelled.append(True))
    assert w.worker.start(long_step)
    w.close()
    assert w.isVisible() and "Stopping the running job" in w.state.text()
    release.set()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=20_000)
    assert cancelled == [True] and not w.worker.is_busy
