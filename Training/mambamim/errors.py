"""The base class of every error that is the user's to fix, not the program's.

A bad input file, a model card that does not fit, a checkpoint of another kind, a scan of the wrong
modality, a setting out of range, a device that is not there: each is raised as a subclass of
:class:`MambaMIMError` with a one-line message that names the file or setting and what is wrong.
``mambamim``'s command line (:func:`mambamim.cli.main`, and the progress stream of ``segment`` and
``reconstruct``) prints :data:`USER_ERRORS` as one line with exit status 1; any other exception (a
``RuntimeError`` from torch, say) is a bug and keeps its traceback.
"""

from __future__ import annotations


class MambaMIMError(Exception):
    """A user-facing error: the message names the file or setting and what is wrong with it."""


class InvalidInput(MambaMIMError, ValueError):
    """A value the user gave (an option, a setting, a file's content) cannot be used."""


class Unavailable(MambaMIMError, RuntimeError):
    """What the user asked for (a CUDA device, a kernel backend) is not available on this machine."""


# What the command line reports as one line. OSError: the operating system's own file errors (not
# found, exists, permission, disk full) name the path; MemoryError: the input is too large for this machine.
USER_ERRORS: tuple[type[BaseException], ...] = (MambaMIMError, OSError, MemoryError)
