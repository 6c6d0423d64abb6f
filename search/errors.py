from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: the message is one line naming what is wrong and how to fix it."""
