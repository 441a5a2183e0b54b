"""The exceptions advface raises for problems a user can fix.

Each message says what was expected, what was received and what to do. The CLI prints them as one line
and exits with code 2; anything else is a bug and keeps its traceback.
"""


class AdvfaceError(Exception):
    """A problem with the user's input or setup, with a message that says how to fix it."""


class ImageError(AdvfaceError, ValueError):
    """An image file that cannot be read, or an array that is not an image batch."""


class NoFaceError(AdvfaceError):
    """An image in which no face was found where one was required."""


class WeightsError(AdvfaceError):
    """Model weights that are missing, of the wrong kind, or malformed."""
