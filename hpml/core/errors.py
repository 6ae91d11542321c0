"""The two kinds of failure a user sees: bad input they can fix, and everything else.

`UsageError` and its kinds are reported as their message alone with exit 2 (hpml.core.failure);
any other exception is a fault: traceback, exit 1. Nothing here imports anything, so every
layer can raise them.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input the user can fix (a path, a config value, a data set too small...): reported
    as its message alone, exit 2. Every other exception is a fault: traceback, exit 1."""


class SourceError(UsageError):
    """An input file that is structurally broken (a source table, a split file): the message
    names the file (and line)."""
