"""The tradeoff service, by concept (the command line, ``cli``, parses only; ``commands`` does
the work):

- ``task``: the data, the model to compress, its teacher and training;
- ``trial``: the runner that builds, fine-tunes or stops, and measures one plan (``measure/``),
  the stopping rule, the figures' registry and the models kept;
- ``study``: its configuration and records, the sampler policy, the sensitivity table, the
  worker loop;
- ``views``: the front, ranking and cost, the report and its drawing, export and verify, the
  dashboard.
"""

from __future__ import annotations

__all__: list[str] = []
