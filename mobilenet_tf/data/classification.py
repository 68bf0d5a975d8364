"""Image-classification input pipelines: TFDS (imagenet2012, imagenette, any image
classification dataset by name), a folder of class subfolders, or synthetic data.

Images leave the pipeline as float32 pixels in [0, 255], shape (S, S, 3); the
recipes build their models with ``include_preprocessing=True`` so the model
rescales to [-1, 1] itself (keras.applications' V3 contract, which makes
transferred ImageNet weights see exactly what they were trained on).

Training: Inception-style random-resized crop (area 8-100%, aspect 3/4-4/3),
horizontal flip and optionally RandAugment (``augment``). Evaluation: central crop
of 87.5% (224 of 256) resized to S.
"""

import dataclasses
import os
from typing import Optional

import tensorflow as tf

from mobilenet_tf.data import finish, image_check, synthetic, tfds_builder, without_autograph

MANUAL_DOWNLOAD_HELP = {
    "imagenet2012": (
        "imagenet2012 needs a manual download: get ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from image-net.org, put them in {manual_dir}, then run "
        "`tfds build imagenet2012 --data_dir {data_dir}` (or rerun this command, which prepares it)."
    ),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Split:
    """A dataset split: ``(image (H, W, 3), label)`` examples; the label is an int
    for classification, a (H, W, 1) map of class ids for segmentation. Folder
    splits carry their ``image_check.CheckReport`` (files skipped and why) in
    ``check``; other splits have None."""

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: list
    check: Optional[image_check.CheckReport] = None


def synthetic_split(training, num_examples, image_size, num_classes=10, seed=0):
    ds = synthetic.synthetic_classification(num_examples, image_size, num_classes,
                                            seed=seed + (0 if training else 10_000))
    return Split(ds, num_examples, num_classes, synthetic.class_names(num_classes))


def folder_split(directory, class_names=None, strict=False, check_cache=None):
    """A folder with one subfolder of images per class (sorted names = label ids).

    Every file is decoded once first (``image_check.check_files``, cached):
    unreadable files are left out and listed in the split's ``check`` report, or
    with ``strict`` raise ``ValueError``. ``check_cache``: the check's cache
    folder (default: the user cache; False: none).
    """
    if not directory or not os.path.isdir(directory):
        raise ValueError(f"image folder {directory!r} does not exist; it must contain one subfolder per class.")
    names = class_names or sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    files, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(directory, name)
        found = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)) \
            if os.path.isdir(folder) else []
        files += [os.path.join(folder, f) for f in found]
        labels += [label] * len(found)
    if len(names) < 2 or not files:
        raise ValueError(f"image folder {directory!r} needs at least 2 class subfolders with images "
                         f"({', '.join(IMAGE_EXTENSIONS)}); found {len(names)} classes, {len(files)} images.")
    good, report = image_check.check_files(files, cache_dir=check_cache)
    report.raise_if_strict(strict)
    if not good:
        raise ValueError(f"image folder {directory!r}: none of its {len(files)} images decodes (e.g. "
                         f"{report.unreadable[0][0]}: {report.unreadable[0][1]}).")
    keep = set(good)
    files, labels = zip(*[(f, label) for f, label in zip(files, labels) if f in keep])
    files, labels = list(files), list(labels)

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    ds = ds.map(without_autograph(load), num_parallel_calls=tf.data.AUTOTUNE)
    return Split(ds, len(files), len(names), names, check=report)


def tfds_split(name, split, data_dir=None, download=True):
    """A TFDS image-classification split, as ``(image, label)``."""
    builder = tfds_builder.prepared_builder(
        name, data_dir, download, MANUAL_DOWNLOAD_HELP.get(name.split("/")[0]),
        hint="Use 'synthetic', 'folder', 'imagenet2012', 'imagenette' or any TFDS image-classification dataset name.")
    features = builder.info.features
    keys = builder.info.supervised_keys
    if not keys or "label" not in features or len(features[keys[0]].shape) != 3:
        raise ValueError(f"dataset {name!r} is not an image-classification dataset (features: {list(features)}).")
    splits = builder.info.splits
    if splits and split not in splits:
        split = "validation" if "validation" in splits else "test"
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    num_examples = tfds_builder.num_examples(builder, split, ds)
    label_feature = features[keys[1]]
    return Split(ds, num_examples, label_feature.num_classes, list(label_feature.names))


def random_resized_crop(image, size, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3), seed=None):
    """Inception-style crop of a random area and aspect ratio, resized to (size, size)."""
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        min_object_covered=0.0, aspect_ratio_range=aspect_range, area_range=area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True, seed=seed)
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def center_crop(image, size, fraction=0.875):
    """Central ``fraction`` of the shorter side, resized to (size, size)."""
    shape = tf.shape(image)
    side = tf.cast(tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * fraction, tf.int32)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, side, side)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def make_pipeline(split, *, training, batch_size, image_size, area_range=(0.08, 1.0),
                  shuffle_buffer=10_000, repeat=None, deterministic=False, seed=0, cache=False, augment=None):
    """Batched ``(float32 [0, 255] (B, S, S, 3), int32 (B,))`` ready for ``model.fit``.

    Training data is shuffled, augmented and repeated; evaluation data is not.
    ``augment``: a further training augmentation of one (S, S, 3) image after the
    crop and flip (e.g. ``augment.RandAugment``). ``deterministic`` fixes the order
    and augmentation for a given ``seed``.
    """
    def prepare(image, label):
        image = tf.cast(image, tf.float32)
        if training:
            # Op-level seeds (with the global seed the recipe sets) make the
            # augmentation reproducible; TensorFlow requires them under op determinism.
            image = random_resized_crop(image, image_size, area_range, seed=seed + 1)
            image = tf.image.random_flip_left_right(image, seed=seed + 2)
            if augment is not None:
                image = augment(image)
        else:
            image = center_crop(image, image_size)
        return tf.clip_by_value(image, 0.0, 255.0), tf.cast(label, tf.int32)

    ds = split.dataset.cache() if cache else split.dataset
    return batched(ds, prepare, training=training, batch_size=batch_size, num_examples=split.num_examples,
                   shuffle_buffer=shuffle_buffer, repeat=repeat, deterministic=deterministic, seed=seed)


def batched(dataset, prepare, *, training, batch_size, num_examples, shuffle_buffer, repeat=None,
            deterministic=False, seed=0, padded=False):
    """The recipes' common pipeline end: shuffle (training) and repeat (``repeat``,
    default: when training), ``prepare`` each example in parallel, batch (dropping
    the last partial batch in training; ``padded``: zero-padded to the batch's largest
    example), ``finish`` (prefetch, options). ``deterministic`` fixes the order."""
    if training:
        dataset = dataset.shuffle(min(shuffle_buffer, num_examples), seed=seed, reshuffle_each_iteration=True)
    repeat = training if repeat is None else repeat
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(without_autograph(prepare), num_parallel_calls=tf.data.AUTOTUNE)
    batch = dataset.padded_batch if padded else dataset.batch
    return finish(batch(batch_size, drop_remainder=training), deterministic=deterministic)
