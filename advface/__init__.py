"""advface: assessing how face recognition fails under attack.

The core library is Qt-free: ``advface.gui`` is the only part that imports PySide6. Images everywhere are
float32 RGB ``(N, H, W, 3)`` in ``[0, 1]`` (see :mod:`advface.images`).
"""

from advface.version import __version__

__all__ = ["__version__"]
