"""The errors tradeoff raises on purpose.

``TradeoffError`` is the base of every one of them (the CLI prints it as one line and exits 2);
it lives here because ``tradeoff.storage`` depends on no other tradeoff package, so
``tradeoff.spaces`` and ``tradeoff.search`` can both derive from it.
"""

from __future__ import annotations


class TradeoffError(Exception):
    """Raised on purpose by tradeoff; the message is one line naming what is wrong and how to
    fix it, and never contains a password."""


class StorageError(TradeoffError):
    """A storage URL, database or artifact store that cannot be used."""
