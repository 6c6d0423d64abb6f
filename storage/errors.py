from __future__ import annotations


class StorageError(Exception):
    """A storage URL, database or artifact store that cannot be used; the message is one line
    and never contains a password."""
