"""Fanning one run out over several GPUs or ComfyUI servers with Ray.

A *worker* is a Ray actor that owns one engine (a diffusers pipeline on one GPU, kept loaded
between tasks, or one ComfyUI server) or one set of face models. The *pool*
(:mod:`likeness.scale.pool`) hands workers tasks ("this callable on this payload"), takes a
task whose worker died back and gives it to another, and returns results as they finish.
Workers only compute: the driver (the command that built the pool) stores every result in the
workspace through the same code as a local run, so the database stays the one source of truth
and ``kill -9`` of the driver followed by the same command resumes as it always did.

Only :mod:`likeness.cli` imports this package, and only when ``--workers``, several
``--comfy-url``, ``--ray`` or the workspace's ``[scale]`` settings ask for it: Ray is an
optional extra (``pip install 'likeness[scale]'``). See docs/scale.md.
"""
