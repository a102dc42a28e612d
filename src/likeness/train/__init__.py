"""Training character LoRAs and writing them as files other tools load.

- :mod:`likeness.train.recipe`: the train recipe (TOML, validated, with a commented example).
- :mod:`likeness.train.data`: a dataset version as training items, aspect-ratio buckets, order.
- :mod:`likeness.train.cache`: latents and text embeddings cached in the workspace.
- :mod:`likeness.train.setup`: the base model loaded as the engines load it, LoRA injected.
- :mod:`likeness.train.objectives`: what one step computes per family (SDXL/SD1.5, FLUX).
- :mod:`likeness.train.optim`: optimizer and learning-rate schedule.
- :mod:`likeness.train.state`: resume state written atomically, read back exactly.
- :mod:`likeness.train.store`: train runs, checkpoints and losses in the database.
- :mod:`likeness.train.loop`: the training loop (NaN guard, checkpoints, samples, hooks).
- :mod:`likeness.train.run`: the job that composes them: ``train_lora(ws, recipe)``.
- :mod:`likeness.train.kohya`: LoRA files in kohya format, with ``ss_*`` metadata.
- :mod:`likeness.train.lora_files`: what a LoRA file holds; adding one trained elsewhere.
- :mod:`likeness.train.export_config`: dataset and job configs for kohya and ai-toolkit.
"""
