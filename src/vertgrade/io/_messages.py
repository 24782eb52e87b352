"""Text shared by the readers' error messages (not for users to import)."""

from __future__ import annotations

__all__ = ["short_reason"]

#: Longest reason quoted from a library's exception in an :class:`~vertgrade.errors.InputError`.
_MAX_REASON_CHARS = 200


def short_reason(err: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name
    where the message is empty: what a one-line error quotes of a library's failure.

    >>> short_reason(ValueError("bad header\\nmore detail"))
    'bad header'
    >>> short_reason(EOFError())
    'EOFError'
    """
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:_MAX_REASON_CHARS]
