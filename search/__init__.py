"""The tradeoff service: studies, the trial runner, measurements and the CLI."""

from __future__ import annotations

__all__: list[str] = []
