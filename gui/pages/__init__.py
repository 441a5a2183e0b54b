"""The launcher's pages, one module each as the GUI issue brings them (verify, identify, attacks, glasses,
semantic, certification). Every page is a ``QWidget`` with a class attribute ``title`` and the
constructor ``(worker, settings)``; ``advface.gui.app.PAGES`` lists them in launcher order."""
