"""Face data: identity folders, TFDS ``lfw``, synthetic identities, LFW pairs, P x K batches.

A ``FaceSplit`` is a list of face images with identity labels. Its images are
decoded lazily inside ``tf.data`` from files (a folder of identity subfolders,
the VGGFace2 / CASIA-WebFace / MS-Celeb layout), from encoded bytes (TFDS
``lfw``, read without decoding) or from an in-memory uint8 array (synthetic).
Every image is centre-cropped by the split's ``crop_fraction`` (1.0 for aligned
crops; LFW's 250x250 photos get FaceNet's "fixed centre crop") and resized to
the model's input; grayscale and RGBA files become RGB.

Training batches (``identity_batches``) hold P identities x K images each, in
blocks of K, which triplet mining needs. Verification uses ``Pairs``: the LFW
10-fold protocol, read from the official ``pairs.txt`` or generated
deterministically (``make_pairs``: identities disjoint across folds, 300
matched and 300 mismatched pairs per fold).
"""

import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

from mobilenet_tf.data import classification, finish, identities, image_check, tfds_builder, without_autograph

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
LFW_CENTRE_CROP = 0.6  # 150 of LFW's 250 pixels: the face and little background
LFW_FOLDS, LFW_PAIRS_PER_FOLD = 10, 300
SYNTHETIC_TRAIN_SEED, SYNTHETIC_EVAL_SEED = 0, 1_000_003  # disjoint identities


@dataclasses.dataclass
class FaceSplit:
    """Face images with identity labels.

    Attributes:
        sources: (N, H, W, 3) uint8 array, or N file paths, or N encoded images (bytes).
        kind: "array", "file" or "bytes".
        labels: (N,) int32 identity ids in [0, len(names)).
        names: identity names.
        crop_fraction: central fraction of the shorter side kept before resizing.
        skipped: what was left out and why, e.g. {"identities_with_fewer_than_2_images": 3}.
        files: the relative file names ("Name/Name_0001.jpg") when known (to read pairs.txt).
        check: folder splits: the ``image_check.CheckReport`` (unreadable files and why).
    """

    sources: object
    kind: str
    labels: np.ndarray
    names: list
    crop_fraction: float = 1.0
    skipped: dict = dataclasses.field(default_factory=dict)
    files: list = None
    check: object = None

    def __len__(self):
        return len(self.labels)

    @property
    def num_identities(self):
        return len(self.names)

    def images_per_identity(self):
        """(num_identities,) image counts."""
        return np.bincount(self.labels, minlength=self.num_identities)


@dataclasses.dataclass
class Pairs:
    """Verification pairs over a split: indices ``first``/``second`` (M,), ``same`` (M,)
    bool (same identity) and ``fold`` (M,) in [0, num_folds)."""

    split: FaceSplit
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    fold: np.ndarray

    @property
    def num_folds(self):
        return int(self.fold.max()) + 1 if len(self.fold) else 0


# ---------------------------------------------------------------- splits


def synthetic_split(num_identities, images_per_identity, image_size=64, training=True, seed=0):
    """Procedural identities (``mobilenet_tf.data.identities``); training and evaluation
    identities come from different seeds, so they never overlap."""
    base = SYNTHETIC_TRAIN_SEED if training else SYNTHETIC_EVAL_SEED
    images, labels = identities.synthetic_identities(num_identities, images_per_identity, image_size, base + seed)
    return FaceSplit(images, "array", labels, synthetic_names(num_identities, training))


def synthetic_names(num_identities, training=True):
    """The names of ``synthetic_split``'s identities."""
    prefix = "train" if training else "eval"
    return [f"{prefix}_identity_{i:05d}" for i in range(num_identities)]


def array_split(images, labels, names=None):
    """A split from an in-memory (N, H, W, 3) uint8 image array and (N,) labels."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be an (N, H, W, 3) RGB array; got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 pixels in [0, 255]; got dtype {images.dtype}.")
    uniques, labels = np.unique(np.asarray(labels), return_inverse=True)
    if len(labels) != len(images):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(images)} images.")
    names = list(names) if names is not None else [str(u) for u in uniques]
    return FaceSplit(images, "array", labels.astype(np.int32), names)


def folder_split(directory, min_images=2, check_images=True, strict=False, check_cache=None):
    """A folder of identity subfolders of face crops (VGGFace2 / CASIA-WebFace layout).

    Identities with fewer than ``min_images`` images are skipped and counted (a
    triplet needs two images of one identity); with ``check_images`` every file is
    decoded once as training will (``image_check.check_files``, cached) and
    unreadable files are skipped, counted and listed in the split's ``check``
    report, or with ``strict`` raise ``ValueError``. ``check_cache``: the check's
    cache folder (default: the user cache; False: none).

    Raises:
        ValueError: the folder does not exist or holds no usable identity; with
            ``strict``, an unreadable file.
    """
    if not directory or not os.path.isdir(directory):
        raise ValueError(f"face folder {directory!r} does not exist; it must hold one subfolder of face images "
                         "per identity.")
    skipped = {f"identities_with_fewer_than_{min_images}_images": 0, "unreadable_files": 0}
    found = {}
    for name in sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d))):
        found[name] = [os.path.join(name, f) for f in sorted(os.listdir(os.path.join(directory, name)))
                       if f.lower().endswith(IMAGE_EXTENSIONS)]
    report = None
    if check_images:
        every = [os.path.join(directory, p) for paths in found.values() for p in paths]
        good, report = image_check.check_files(every, cache_dir=check_cache)
        report.raise_if_strict(strict)
        skipped["unreadable_files"] = len(report.unreadable)
        good = set(good)
        found = {name: [p for p in paths if os.path.join(directory, p) in good] for name, paths in found.items()}
    files, labels, names = [], [], []
    for name, paths in found.items():
        if len(paths) < min_images:
            skipped[f"identities_with_fewer_than_{min_images}_images"] += 1
            continue
        files += paths
        labels += [len(names)] * len(paths)
        names.append(name)
    if len(names) < 2:
        raise ValueError(f"face folder {directory!r} needs at least 2 identity subfolders with >= {min_images} "
                         f"images ({', '.join(IMAGE_EXTENSIONS)}); found {len(names)} (skipped: {skipped}).")
    return FaceSplit([os.path.join(directory, f) for f in files], "file", np.asarray(labels, np.int32), names,
                     skipped=skipped, files=files, check=report)


def lfw_split(data_dir=None, download=True, crop_fraction=LFW_CENTRE_CROP):
    """TFDS ``lfw`` (13,233 images of 5,749 people) as encoded bytes, identities sorted by name.

    TFDS does not keep LFW's file names, so the official ``pairs.txt`` needs the
    image folder (``lfw_folder_split``); generated pairs (``make_pairs``) work on this.
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder.prepared_builder("lfw", data_dir, download)
    ds = builder.as_dataset(split="train", shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    encoded, people = [], []
    for example in ds.as_numpy_iterator():
        encoded.append(example["image"])
        people.append(example["label"].decode())
    if not encoded:
        raise ValueError(f"TFDS lfw in {data_dir!r} holds no images.")
    names = sorted(set(people))
    index = {name: i for i, name in enumerate(names)}
    labels = np.asarray([index[p] for p in people], np.int32)
    order = np.argsort(labels, kind="stable")
    return FaceSplit([encoded[i] for i in order], "bytes", labels[order], names, crop_fraction)


def lfw_folder_split(directory, crop_fraction=LFW_CENTRE_CROP, strict=False, check_cache=None):
    """LFW's image folder (``lfw/Name/Name_0001.jpg``, from lfw.tgz or an aligned
    version of it): every identity, even with one image, since pairs.txt uses them.
    Every file is decoded once (see ``folder_split``); unreadable ones are skipped
    (a pairs.txt line naming one then says so) or, with ``strict``, refused."""
    split = folder_split(directory, min_images=1, strict=strict, check_cache=check_cache)
    split.crop_fraction = crop_fraction
    return split


def find_lfw_folder(data_dir):
    """The ``lfw`` image folder TFDS extracted under ``data_dir/downloads/extracted``, or None."""
    root = data_dir or os.path.expanduser("~/tensorflow_datasets")
    found = sorted(glob.glob(os.path.join(root, "downloads", "extracted", "*", "lfw")))
    return found[0] if found else None


# ---------------------------------------------------------------- pairs


def make_pairs(split, num_folds=LFW_FOLDS, pairs_per_fold=LFW_PAIRS_PER_FOLD, seed=0):
    """LFW-style verification pairs, deterministic for a given split and ``seed``.

    Identities are shuffled and dealt into ``num_folds`` folds (no identity in two
    folds, as in LFW's View 2); each fold gets up to ``pairs_per_fold`` distinct
    matched pairs (two images of one of its identities) and as many distinct
    mismatched pairs (images of two of its identities).

    Raises:
        ValueError: fewer identities than folds, or a fold without a matched pair.
    """
    rng = np.random.default_rng(seed)
    if split.num_identities < 2 * num_folds:
        raise ValueError(f"{num_folds}-fold pairs need >= {2 * num_folds} identities; the split has "
                         f"{split.num_identities}.")
    members = [np.flatnonzero(split.labels == i) for i in range(split.num_identities)]
    folds = np.array_split(rng.permutation(split.num_identities), num_folds)
    first, second, same, fold_ids = [], [], [], []
    for f, people in enumerate(folds):
        sizes = np.array([len(members[p]) for p in people])
        matched = _distinct_pairs(rng, min(pairs_per_fold, int(np.sum(sizes * (sizes - 1) // 2))),
                                  lambda: _matched_pair(rng, people, members))
        mismatched = _distinct_pairs(rng, min(pairs_per_fold, int((sizes.sum() ** 2 - np.sum(sizes ** 2)) // 2)),
                                     lambda: _mismatched_pair(rng, people, members))
        if not matched:
            raise ValueError(f"fold {f} has no identity with 2 images: add images or use fewer folds.")
        for pairs, is_same in ((matched, True), (mismatched, False)):
            first += [a for a, _ in pairs]
            second += [b for _, b in pairs]
            same += [is_same] * len(pairs)
            fold_ids += [f] * len(pairs)
    return Pairs(split, np.asarray(first), np.asarray(second), np.asarray(same), np.asarray(fold_ids))


def _matched_pair(rng, people, members):
    candidates = [p for p in people if len(members[p]) >= 2]
    if not candidates:
        return None
    a, b = rng.choice(members[rng.choice(candidates)], 2, replace=False)
    return (int(min(a, b)), int(max(a, b)))


def _mismatched_pair(rng, people, members):
    p, q = rng.choice(people, 2, replace=False)
    a, b = int(rng.choice(members[p])), int(rng.choice(members[q]))
    return (min(a, b), max(a, b))


def _distinct_pairs(rng, count, draw, attempts_per_pair=20):
    """Up to ``count`` distinct pairs from ``draw()`` (None: none possible), in draw
    order. ``count`` at most the number of distinct pairs there are, so that a small
    fold stops when it has them all instead of drawing ``count * attempts_per_pair``
    times (20 identities of 10 images: 6.6 s of draws per ``make_pairs``)."""
    pairs = []
    seen = set()
    for _ in range(count * attempts_per_pair):
        if len(pairs) == count:
            break
        pair = draw()
        if pair is None:
            break
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def read_pairs_file(path, split):
    """LFW's official ``pairs.txt`` (View 2) over an LFW folder split.

    Format: a header ``folds<TAB>n``, then per fold n matched lines ``name i j``
    and n mismatched lines ``name1 i name2 j`` (1-based image numbers, files
    ``name/name_000i.jpg``).

    Raises:
        ValueError: missing file, malformed line (a non-integer image number, a
            mismatched line inside a fold's matched block or the reverse), or an
            image not in the split; each names the file and its line number.
    """
    if not os.path.isfile(path):
        raise ValueError(f"pairs file {path!r} does not exist.")
    if split.files is None:
        raise ValueError("a pairs file names LFW image files: evaluate on LFW's image folder (--lfw-dir), not on a "
                         "split without file names.")
    index = {f.replace(os.sep, "/"): i for i, f in enumerate(split.files)}
    with open(path) as f:  # (line number in the file, fields), blank lines skipped
        lines = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise ValueError(f"{path!r} is empty; LFW's pairs.txt starts with '<folds> <pairs per fold>' ('10 300').")
    header_line, header = lines[0]
    try:
        num_folds, per_fold = int(header[0]), int(header[1])
    except (IndexError, ValueError):
        raise ValueError(f"{path!r} line {header_line}: the first line must be '<folds> <pairs per fold>' "
                         f"(LFW: '10 300'); got {' '.join(header)!r}.") from None
    rows = lines[1:]
    if len(rows) != num_folds * 2 * per_fold:
        raise ValueError(f"{path!r} announces {num_folds} folds x {2 * per_fold} pairs but has {len(rows)} lines.")

    def image(name, number, line_no):
        try:
            number = int(number)
        except ValueError:
            raise ValueError(f"{path!r} line {line_no}: image number {number!r} of {name!r} is not an "
                             "integer.") from None
        key = f"{name}/{name}_{number:04d}.jpg"
        if key not in index:
            unreadable = [reason for file, reason in (split.check.unreadable if split.check else [])
                          if file.replace(os.sep, "/").endswith("/" + key)]
            why = f" (it is unreadable and was skipped: {unreadable[0]})" if unreadable else ""
            raise ValueError(f"{path!r} line {line_no}: image {key!r} is not in the LFW folder{why}.")
        return index[key]

    # Official layout (View 2): per fold, ``per_fold`` matched lines, then ``per_fold`` mismatched.
    first, second, same, fold = [], [], [], []
    for n, (line_no, row) in enumerate(rows):
        matched = n % (2 * per_fold) < per_fold
        expected = 3 if matched else 4
        if len(row) != expected:
            block = "matched ('name i j')" if matched else "mismatched ('name1 i name2 j')"
            raise ValueError(f"{path!r} line {line_no}: fold {n // (2 * per_fold) + 1} expects a {block} pair "
                             f"here (each fold: {per_fold} matched lines, then {per_fold} mismatched); got "
                             f"{' '.join(row)!r}.")
        if matched:
            a, b = image(row[0], row[1], line_no), image(row[0], row[2], line_no)
        else:
            a, b = image(row[0], row[1], line_no), image(row[2], row[3], line_no)
        first.append(a), second.append(b), same.append(matched), fold.append(n // (2 * per_fold))
    return Pairs(split, np.asarray(first), np.asarray(second), np.asarray(same), np.asarray(fold))


# ---------------------------------------------------------------- tf.data


def _image_loader(split, image_size):
    """``index -> float32 (S, S, 3) image in [0, 255]`` for ``split`` (centre crop, resize)."""
    if split.kind == "array":
        table = tf.constant(split.sources)
        read = lambda i: tf.gather(table, i)  # noqa: E731
    elif split.kind in ("file", "bytes"):
        table = tf.constant(list(split.sources))

        def read(i):
            data = tf.gather(table, i)
            data = tf.io.read_file(data) if split.kind == "file" else data
            return tf.io.decode_image(data, channels=3, expand_animations=False)
    else:
        raise ValueError(f"unknown split kind {split.kind!r}; expected 'array', 'file' or 'bytes'.")

    def load(i):
        return classification.center_crop(tf.cast(read(i), tf.float32), image_size, split.crop_fraction)

    return load


def augment(image, seed, crop_area=(0.8, 1.0)):
    """Face augmentation: a random crop of 80-100% of the area (aspect 0.9-1.1), flip,
    brightness, contrast and saturation. (S, S, 3) [0, 255] -> same; ``seed`` shape [2]."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    size = tf.shape(image)[:2]
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seeds[0], min_object_covered=0.0,
        aspect_ratio_range=(0.9, 1.1), area_range=crop_area, use_image_if_no_bounding_boxes=True)
    image = tf.image.resize(tf.slice(image, begin, crop_size), size, antialias=True)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    image = tf.image.stateless_random_brightness(image, 0.1 * 255.0, seeds[2])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds[3])
    image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seeds[4])
    return tf.clip_by_value(image, 0.0, 255.0)


def check_identity_batch(split, identities_per_batch, images_per_identity):
    """P x K must be possible: P <= identities, 2 <= K <= the smallest identity's images."""
    check_identity_counts(split.names, split.images_per_identity(), identities_per_batch, images_per_identity)


def check_identity_counts(names, counts, identities_per_batch, images_per_identity):
    """``check_identity_batch`` for identities ``names`` with ``counts`` images each
    (known before the images are, e.g. from the synthetic preset's flags)."""
    counts = np.asarray(counts)
    if identities_per_batch < 2 or identities_per_batch > len(names):
        raise ValueError(f"`identities_per_batch` (P) must be in [2, {len(names)}] (the identities in the "
                         f"training data); got {identities_per_batch}.")
    smallest = int(counts.min())
    if images_per_identity < 2 or images_per_identity > smallest:
        name = names[int(counts.argmin())]
        raise ValueError(f"`images_per_identity` (K) must be in [2, {smallest}]: identity {name!r} has only "
                         f"{smallest} images; got {images_per_identity}. Lower K or remove identities with fewer "
                         f"than K images.")


def identity_batches(split, identities_per_batch, images_per_identity, image_size, teacher_embeddings=None,
                     augmentation=True, seed=0):
    """Endless training batches of P identities x K images (FaceNet 3.2).

    Each batch draws P distinct identities and K distinct images of each, laid out
    in blocks of K, so mining finds K - 1 positives per anchor; under a
    ``tf.distribute`` strategy each replica's slice must hold whole blocks
    (per-replica batch divisible by K). Draws depend only on ``seed`` and the
    batch number.

    Args:
        split: a ``FaceSplit``.
        identities_per_batch, images_per_identity: P and K.
        image_size: side S of the model input.
        teacher_embeddings: optional (N, D) teacher embeddings of the split's
            images, added to the targets for distillation.
        augmentation: apply ``augment``.

    Returns:
        ``tf.data.Dataset`` of (float32 (P*K, S, S, 3) in [0, 255], ``losses.pack_targets``
        (P*K, 1) or (P*K, 1 + D)).
    """
    from mobilenet_tf.heads.facenet import losses  # a sibling; avoids a cycle at import

    check_identity_batch(split, identities_per_batch, images_per_identity)
    if teacher_embeddings is not None and len(teacher_embeddings) != len(split):
        raise ValueError(f"`teacher_embeddings` has {len(teacher_embeddings)} rows for {len(split)} images.")
    p, k = identities_per_batch, images_per_identity
    counts = split.images_per_identity()
    order = tf.constant(np.argsort(split.labels, kind="stable").astype(np.int32))
    starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32))
    counts_t, max_count = tf.constant(counts.astype(np.int32)), int(counts.max())
    labels = tf.constant(split.labels)
    teacher = tf.constant(np.asarray(teacher_embeddings, np.float32)) if teacher_embeddings is not None else None
    load = _image_loader(split, image_size)

    def draw(step):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), step]), 3)
        people = tf.argsort(tf.random.stateless_uniform([split.num_identities], seeds[0]))[:p]  # (P,)
        keys = tf.random.stateless_uniform([p, max_count], seeds[1])
        keys += tf.cast(tf.range(max_count)[None, :] >= tf.gather(counts_t, people)[:, None], tf.float32) * 2.0
        positions = tf.argsort(keys, axis=1)[:, :k]  # K distinct images of each identity
        indices = tf.reshape(tf.gather(order, tf.gather(starts, people)[:, None] + positions), [-1])
        return indices, tf.random.experimental.stateless_split(seeds[2], p * k)

    def example(index, image_seed):
        image = load(index)
        return (augment(image, image_seed) if augmentation else image), index

    def targets(images, indices):
        batch_labels = tf.gather(labels, indices)
        return images, losses.pack_targets(batch_labels, None if teacher is None else tf.gather(teacher, indices))

    ds = tf.data.Dataset.counter().map(without_autograph(draw)).unbatch()
    ds = ds.map(without_autograph(example), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return finish(ds.batch(p * k, drop_remainder=True).map(without_autograph(targets)))


def image_batches(split, image_size, batch_size=64, indices=None):
    """The split's images in order (or ``indices``), no augmentation: (B, S, S, 3) float32."""
    indices = np.arange(len(split)) if indices is None else np.asarray(indices)
    ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int32))
    ds = ds.map(without_autograph(_image_loader(split, image_size)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return finish(ds.batch(batch_size))
