"""Sweeps and the model card: generate, score, decide.

- :mod:`likeness.evaluate.cells`: one image per resolved recipe, stored and scored once.
- :mod:`likeness.evaluate.sweep_spec` / :mod:`~likeness.evaluate.sweep`: grids of recipe
  variants, ranked by :mod:`~likeness.evaluate.objective`.
- :mod:`likeness.evaluate.card_spec` / :mod:`~likeness.evaluate.card`: the 23-shot model card
  and its verdicts; :mod:`~likeness.evaluate.compare`: cards side by side.
- :mod:`likeness.evaluate.loop`: one turn of the generate -> score -> filter -> review loop.
"""
