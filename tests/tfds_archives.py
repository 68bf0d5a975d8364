"""Tiny manual-download archives in the real layouts, for offline TFDS preparation.

``write_imagenet2012_manual(manual_dir)`` writes ``ILSVRC2012_img_train.tar`` (a tar
of per-synset tars of ``<synset>_<n>.JPEG``) and ``ILSVRC2012_img_val.tar``
(``ILSVRC2012_val_<8 digits>.JPEG``); ``write_cityscapes_manual(manual_dir)`` writes
``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` (city folders,
``<city>_<seq>_<frame>_leftImg8bit.png`` and ``..._gtFine_labelIds.png`` ...).
Both return what TFDS should make of them, so tests can check the prepared data.
``prepare_imagenet2012(data_dir)`` / ``prepare_cityscapes(data_dir)`` also run
``download_and_prepare`` for tests that only need a prepared dataset.

Layouts follow the installed TFDS builders (tensorflow_datasets/datasets/
imagenet2012/imagenet2012_dataset_builder.py, imagenet_common.py and
datasets/cityscapes/cityscapes_dataset_builder.py).
"""

import io
import json
import os
import tarfile
import zipfile

import numpy as np

MANUAL = os.path.join("downloads", "manual")

IMAGENET_TRAIN_TAR = "ILSVRC2012_img_train.tar"
IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"
CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
CITYSCAPES_SHAPE = (1024, 2048)  # TFDS declares this fixed image shape
CITYSCAPES_NAME = "cityscapes/semantic_segmentation"
# split folder -> ((city, number of images), ...); real city names of each split.
CITYSCAPES_LAYOUT = {"train": (("aachen", 2),), "val": (("frankfurt", 1),), "test": (("berlin", 1),)}


def _tfds_file(*parts):
    import tensorflow_datasets as tfds

    return os.path.join(os.path.dirname(tfds.__file__), *parts)


def imagenet_synsets():
    """The 1000 synsets in TFDS label order (label id = line number)."""
    with open(_tfds_file("datasets", "imagenet2012", "labels.txt")) as f:
        return f.read().split()


def imagenet_validation_synsets(count):
    """Synsets of ILSVRC2012_val_00000001 ... _<count>: TFDS zips the sorted file names
    of the validation tar with its bundled validation_labels.txt, line by line."""
    with open(_tfds_file("datasets", "imagenet2012", "validation_labels.txt")) as f:
        return f.read().split()[:count]


def class_colour(label):
    """A distinct RGB colour per label id, so the image content identifies its class."""
    rng = np.random.default_rng(label)
    return tuple(int(v) for v in rng.integers(30, 226, 3))


def _jpeg(label, size, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.empty((*size, 3), np.uint8)
    pixels[:] = class_colour(label)
    pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_336_000_000
    tar.addfile(info, io.BytesIO(data))


def write_imagenet2012_manual(manual_dir, num_validation=4, train_per_class=2, size=(24, 32)):
    """Writes the two ILSVRC2012 tars into ``manual_dir``.

    Training classes are the synsets of the validation images, so both splits share
    their labels. Each image is a (noisy) flat ``class_colour`` of its label.

    Returns:
        {"train": {file name: label id}, "validation": {file name: label id}}, the
        label ids TFDS must give each ``file_name``.
    """
    os.makedirs(manual_dir, exist_ok=True)
    label_of = {synset: i for i, synset in enumerate(imagenet_synsets())}
    val_synsets = imagenet_validation_synsets(num_validation)
    expected = {"train": {}, "validation": {}}

    with tarfile.open(os.path.join(manual_dir, IMAGENET_TRAIN_TAR), "w") as outer:
        for synset in sorted(set(val_synsets)):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for n in range(train_per_class):
                    name = f"{synset}_{10_000 + 17 * n}.JPEG"  # ImageNet's <synset>_<number>.JPEG
                    _add_bytes(inner, name, _jpeg(label_of[synset], size, seed=len(expected["train"])))
                    expected["train"][name] = label_of[synset]
            _add_bytes(outer, f"{synset}.tar", inner_bytes.getvalue())

    with tarfile.open(os.path.join(manual_dir, IMAGENET_VAL_TAR), "w") as tar:
        # Added in reverse: TFDS must pair labels with the *sorted* names, not tar order.
        for index in reversed(range(num_validation)):
            name = f"ILSVRC2012_val_{index + 1:08d}.JPEG"
            label = label_of[val_synsets[index]]
            _add_bytes(tar, name, _jpeg(label, size, seed=1000 + index))
            expected["validation"][name] = label
    return expected


def prepare_imagenet2012(data_dir, **kwargs):
    """``write_imagenet2012_manual`` into ``<data_dir>/downloads/manual`` + TFDS
    preparation; returns (builder, expected labels)."""
    import tensorflow_datasets as tfds

    expected = write_imagenet2012_manual(os.path.join(data_dir, MANUAL), **kwargs)
    builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder, expected


# Cityscapes label ids (cityscapesScripts labels.py) painted into each scene.
SKY, ROAD, SIDEWALK, BUILDING, CAR, EGO_VEHICLE, UNLABELED = 23, 7, 8, 11, 26, 1, 0
LABEL_COLOURS = {SKY: (70, 130, 180), ROAD: (128, 64, 128), SIDEWALK: (244, 35, 232), BUILDING: (70, 70, 70),
                 CAR: (0, 0, 142), EGO_VEHICLE: (0, 0, 0), UNLABELED: (0, 0, 0)}


def cityscapes_scene(index):
    """A deterministic 1024x2048 street scene: (RGB image uint8 (H, W, 3), label ids
    uint8 (H, W)) with sky, building, road, sidewalk, a car, the ego vehicle (an
    ignored id) and an unlabelled strip; the car moves with ``index``."""
    height, width = CITYSCAPES_SHAPE
    label = np.full((height, width), ROAD, np.uint8)
    label[: height * 3 // 8] = SKY
    label[height // 8: height * 3 // 8, : width // 3] = BUILDING
    label[height * 3 // 8: height // 2, width * 3 // 4:] = SIDEWALK
    left = 256 + 192 * index
    label[height // 2: height * 11 // 16, left: left + 384] = CAR
    label[height * 7 // 8:] = EGO_VEHICLE
    label[:, :16] = UNLABELED
    image = np.zeros((height, width, 3), np.uint8)
    for label_id, colour in LABEL_COLOURS.items():
        image[label == label_id] = colour
    return image, label


def _png(array, **kwargs):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=1, **kwargs)
    return buffer.getvalue()


def write_cityscapes_manual(manual_dir, layout=None):
    """Writes leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into ``manual_dir``.

    Args:
        layout: {split folder ("train", "val", "test"): ((city, images), ...)};
            default ``CITYSCAPES_LAYOUT``.

    Returns:
        {TFDS split ("train", "validation", "test"): [(image id, scene index), ...]};
        ``cityscapes_scene(scene index)`` is what the image and its labels hold.
    """
    os.makedirs(manual_dir, exist_ok=True)
    layout = layout or CITYSCAPES_LAYOUT
    tfds_split = {"train": "train", "val": "validation", "test": "test"}
    expected = {}
    scene = 0
    left_zip, fine_zip = (os.path.join(manual_dir, name) for name in CITYSCAPES_ZIPS)
    with zipfile.ZipFile(left_zip, "w", zipfile.ZIP_DEFLATED) as left, \
            zipfile.ZipFile(fine_zip, "w", zipfile.ZIP_DEFLATED) as fine:
        for archive in (left, fine):  # both real zips carry these at the top level
            archive.writestr("README", "The Cityscapes Dataset (tiny test copy).\n")
            archive.writestr("license.txt", "Test data written by tests/tfds_archives.py.\n")
        for folder, cities in layout.items():
            for city, count in cities:
                for sequence in range(count):
                    image_id = f"{city}_{sequence:06d}_{19 + sequence:06d}"
                    image, label = cityscapes_scene(scene)
                    left.writestr(f"leftImg8bit/{folder}/{city}/{image_id}_leftImg8bit.png", _png(image))
                    base = f"gtFine/{folder}/{city}/{image_id}_gtFine"
                    fine.writestr(f"{base}_labelIds.png", _png(label))
                    fine.writestr(f"{base}_color.png", _png(image))
                    fine.writestr(f"{base}_instanceIds.png", _png(label.astype(np.uint16) * 1000))
                    fine.writestr(f"{base}_polygons.json", json.dumps(
                        {"imgHeight": CITYSCAPES_SHAPE[0], "imgWidth": CITYSCAPES_SHAPE[1], "objects": []}))
                    expected.setdefault(tfds_split[folder], []).append((image_id, scene))
                    scene += 1
    return expected


def prepare_cityscapes(data_dir, **kwargs):
    """``write_cityscapes_manual`` into ``<data_dir>/downloads/manual`` + TFDS
    preparation of ``cityscapes/semantic_segmentation``; returns (builder, expected)."""
    import tensorflow_datasets as tfds

    expected = write_cityscapes_manual(os.path.join(data_dir, MANUAL), **kwargs)
    builder = tfds.builder(CITYSCAPES_NAME, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder, expected
