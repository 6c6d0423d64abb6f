"""The trial: the runner that builds, fine-tunes or stops, and measures one plan (``measure/``:
one module per figure family, ``figures``: their registry), the stopping rule and the models kept."""
