"""Spec files that cannot be read fail in one line naming the file."""

from __future__ import annotations

import pytest

from likeness.evaluate.card_spec import CardSpecError, load_card_spec
from likeness.evaluate.sweep_spec import SweepSpecError, load_spec


@pytest.mark.parametrize(
    ("load", "error"), [(load_spec, SweepSpecError), (load_card_spec, CardSpecError)]
)
def test_unreadable_spec_is_one_line(tmp_path, load, error):
    binary = tmp_path / "spec.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(error, match="spec.toml: not UTF-8"):
        load(binary)
    with pytest.raises(error, match="cannot be read"):
        load(tmp_path)  # a folder
    with pytest.raises(error, match="no such file"):
        load(tmp_path / "missing.toml")


def test_a_huge_grid_is_refused_before_it_is_built():
    from likeness.evaluate.sweep_spec import spec_from_dict

    axes = {"cfg": [float(v) for v in range(1, 41)], "steps": list(range(1, 41))}
    axes |= {"loras.0.strength": [0.1 * v for v in range(1, 41)]}
    data = {"base": {"model": "m.safetensors", "prompt": "p", "loras": [{"path": "l"}]}}
    data["axes"] = {
        **axes,
        "refiner.steps": list(range(1, 41)),
        "detailer.steps": list(range(1, 41)),
    }
    with pytest.raises(SweepSpecError, match="102400000 images is over"):
        spec_from_dict(data)


def test_objective_must_be_a_table():
    from likeness.evaluate.sweep_spec import spec_from_dict

    base = {"model": "m.safetensors", "prompt": "p"}
    with pytest.raises(SweepSpecError, match="objective must be a table"):
        spec_from_dict({"base": base, "objective": 5})
