"""``advface gui``: registered on the core's command line through the ``advface.commands`` entry point, so
the core never imports the GUI (this module imports PySide6 only when the command runs)."""

from __future__ import annotations

from advface.errors import AdvfaceError

EXAMPLES = """examples:
  advface gui
  advface-gui                              # the same, as its own command
  pip install -e '.[gui]' && advface gui   # PySide6 comes with the gui extra"""


def _cmd_gui(args) -> int:
    try:
        from advface.gui import app
    except ImportError as exc:
        if "PySide6" not in str(exc):
            raise
        raise AdvfaceError(
            f"The desktop launcher needs PySide6. Received: {exc}. Install the gui extra: "
            "pip install 'advface[gui]'."
        ) from None
    return app.main([])


def add_parser(command) -> None:
    """Register ``advface gui`` (``command(name, help)`` makes a subparser)."""
    p = command("gui", "Open the desktop launcher (needs the gui extra: PySide6)")
    p.epilog = EXAMPLES
    p.set_defaults(run=_cmd_gui)
