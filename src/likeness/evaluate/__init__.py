"""Sweeps, the model card and enrichment: generate (or edit), score, decide.

- :mod:`likeness.evaluate.cells`: one image per resolved recipe, stored and scored once.
- :mod:`likeness.evaluate.sweep_spec` / :mod:`~likeness.evaluate.sweep`: grids of recipe
  variants, ranked by :mod:`~likeness.evaluate.objective`.
- :mod:`likeness.evaluate.card_spec` / :mod:`~likeness.evaluate.card`: the 23-shot model card
  and its verdicts; :mod:`~likeness.evaluate.compare`: cards side by side.
- :mod:`likeness.evaluate.loop`: one turn of the generate -> score -> filter -> review loop.
- :mod:`likeness.evaluate.coverage`: the card's angle x expression grid counted over images;
  :mod:`~likeness.evaluate.enrich_plan` / :mod:`~likeness.evaluate.enrich`: edits asked for
  its empty and thin cells, judged and kept; :mod:`~likeness.evaluate.edit_pairs`: kept edits
  as (control, target, instruction) pairs for edit-model training.
"""
