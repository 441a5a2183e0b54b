"""The PySide6 desktop application (imported as ``advface.gui``; needs the ``gui`` extra).

It uses only advface's public API. The pages arrive with the GUI issue; the core never imports this.
"""
