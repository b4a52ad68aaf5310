"""Library messages in the command line's words (``--overwrite``, not ``overwrite=True``)."""

from __future__ import annotations

__all__ = ["cli_message"]

# Python keyword arguments in library messages -> the CLI flags that set them.
_FLAG_WORDS = (
    ("pass overwrite=True to sharedzarr.create", "pass --overwrite"),
    ("overwrite=True", "--overwrite"),
    ("storage_options", "-o/--storage-option KEY=VALUE"),
    ("concurrency must", "--concurrency must"),
    ("lock=True", "--lock"),
    ("progress=True", "a progress bar"),
)


def cli_message(error: BaseException) -> str:
    """The message of ``error`` with Python keyword arguments replaced by CLI flags.

    Parameters
    ----------
    error : BaseException
        An error raised by the library.

    Returns
    -------
    str
        ``str(error)``, naming ``--overwrite`` where it said ``overwrite=True``, and so on.
    """
    text = str(error)
    for python, flag in _FLAG_WORDS:
        text = text.replace(python, flag)
    return text
