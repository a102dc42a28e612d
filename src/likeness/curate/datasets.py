"""Cut a dataset version from the workspace: select, caption, save."""

from __future__ import annotations

from collections.abc import Callable

from likeness.curate.captions import CaptionTemplate
from likeness.curate.selection import Selection, select_images
from likeness.store.datasets import DatasetItem, DatasetVersion, create_version
from likeness.workspace import Workspace


def caption_template(ws: Workspace) -> CaptionTemplate:
    settings = ws.settings
    return CaptionTemplate(
        template=settings.captions.template,
        trigger=settings.character.trigger,
        class_word=settings.character.class_word,
        placement=settings.captions.trigger_placement,
        name=settings.character.name,
    )


def create_dataset_version(
    ws: Workspace,
    name: str,
    selection: Selection,
    note: str | None = None,
    on_created: Callable[[int], None] | None = None,
) -> DatasetVersion:
    """Select images, caption each from the workspace's template, store a new version
    (`on_created(version_id)` runs in the same transaction)."""
    template = caption_template(ws)
    caption = template.render()
    records = select_images(ws.db, selection)
    items = [DatasetItem(image_sha=r.sha256, caption=caption) for r in records]
    return create_version(
        ws.db,
        name,
        items,
        trigger=template.trigger,
        class_word=template.class_word,
        caption_template=template.template,
        trigger_placement=template.placement,
        selection=selection.to_dict(),
        note=note,
        on_created=on_created,
    )
