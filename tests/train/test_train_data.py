"""Training data: buckets, crops, the order as a function of (seed, epoch), items of a real
dataset version (stored captions, excluded duplicates left out)."""

from __future__ import annotations

from collections import Counter

from PIL import Image

from likeness.store.datasets import resolve
from likeness.train.data import (
    DataOrder,
    TrainItem,
    crop_to_bucket,
    load_items,
    make_buckets,
    nearest_bucket,
    to_tensor_array,
)
from tests.train.conftest import CAPTIONS


def test_buckets_keep_the_area_and_the_step_up_to_one_to_two():
    buckets = make_buckets(1024, 64)
    assert (1024, 1024) in buckets and (832, 1216) in buckets and (1216, 832) in buckets
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert width * height <= 1024 * 1024
        assert max(width, height) / min(width, height) <= 2.0
    assert make_buckets(64, 16) == [(48, 80), (64, 64), (80, 48)]
    assert make_buckets(512, 64, enabled=False) == [(512, 512)]


def test_an_image_goes_to_the_bucket_nearest_its_aspect_ratio():
    buckets = make_buckets(1024, 64)
    assert nearest_bucket(832, 1216, buckets) == (832, 1216)
    assert nearest_bucket(2000, 2000, buckets) == (1024, 1024)
    assert nearest_bucket(1280, 886, make_buckets(64, 16)) == (80, 48)


def test_crop_covers_the_bucket_and_is_centred():
    image = Image.new("RGB", (300, 100))
    cropped, (top, left) = crop_to_bucket(image, (64, 64))
    assert cropped.size == (64, 64)
    assert top == 0 and left == (192 - 64) // 2
    array = to_tensor_array(cropped)
    assert array.shape == (3, 64, 64) and array.min() >= -1.0 and array.max() <= 1.0


def _items(n: int, buckets: list[tuple[int, int]]) -> list[TrainItem]:
    return [TrainItem(f"{i:064x}", f"c{i}", 64, 64, buckets[i % len(buckets)]) for i in range(n)]


def test_each_epoch_shows_every_item_once_in_single_bucket_batches():
    items = _items(11, [(48, 80), (64, 64), (80, 48)])
    order = DataOrder(items, batch=2, seed=7)
    assert order.batches_per_epoch == 2 + 2 + 2  # 4, 4 and 3 items
    for epoch in range(3):
        batches = [order.micro_batch(epoch * order.batches_per_epoch + i) for i in range(6)]
        assert sorted(i for b in batches for i in b) == list(range(11))
        assert all(len({items[i].bucket for i in b}) == 1 for b in batches)
    first, second = order.epoch_batches(0), order.epoch_batches(1)
    assert first != second, "each epoch has its own order"


def test_the_order_is_a_function_of_seed_and_position_alone():
    items = _items(9, [(64, 64)])
    a, b = DataOrder(items, 2, seed=3), DataOrder(items, 2, seed=3)
    run = [a.micro_batch(i) for i in range(25)]
    resumed = [b.micro_batch(i) for i in range(13, 25)]  # a fresh object starting mid-run
    assert run[13:] == resumed
    assert DataOrder(items, 2, seed=4).epoch_batches(0) != a.epoch_batches(0)
    assert a.position(13) == (2, 3) and a.epoch_seed(2) == [3, 2]


def test_items_are_the_stored_captions_without_excluded_duplicates(train_ws, template_ws):
    version = resolve(train_ws.db, "faces@v1")
    assert version.count == 5  # the copy was in the version when it was cut
    data = load_items(train_ws.db, version, make_buckets(64, 16))
    assert data.skipped == (template_ws.excluded,)
    assert template_ws.excluded not in {i.sha256 for i in data.items}
    for item in data.items:
        assert item.caption == CAPTIONS[template_ws.names[item.sha256]]
    assert Counter(i.bucket for i in data.items) == {(48, 80): 1, (80, 48): 1, (64, 64): 2}
    assert data.captions()[0] == "" and len(data.captions()) == 5
    assert len(data.dataset_sha256) == 64
