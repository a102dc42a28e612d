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
