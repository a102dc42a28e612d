"""Two `likeness loop` runs that both decide to start a turn share one."""

from __future__ import annotations

from likeness.evaluate import store


def test_a_turn_started_meanwhile_is_shared_not_duplicated(workspace):
    first = store.create_turn(workspace.db, {"prompt": "x"}, "h1", 4, 0, after=None)
    racing = store.create_turn(workspace.db, {"prompt": "x"}, "h1", 4, 0, after=None)
    assert racing.id == first.id
    second = store.create_turn(workspace.db, {"prompt": "y"}, "h2", 4, 4, after=first.id)
    assert second.id != first.id
    count = workspace.db.execute("SELECT COUNT(*) FROM loop_turns").fetchone()[0]
    assert count == 2
