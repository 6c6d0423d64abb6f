from __future__ import annotations

from tradeoff.storage.errors import TradeoffError


class UsageError(TradeoffError):
    """Bad input from the user: the message is one line naming what is wrong and how to fix it."""
