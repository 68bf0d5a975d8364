"""Segmentation input pipelines: TFDS Cityscapes, the PASCAL VOC 2012 devkit, a folder
of images + label PNGs, or synthetic shapes. Examples are ``(image, label)`` with image (H, W, 3) and label
(H, W, 1) uint8 train ids, ``IGNORE_LABEL`` (255) where there is no class.

Training augmentation (DeepLab's Cityscapes recipe): random scale in [0.5, 2.0],
random crop padded with the mean pixel / the ignore label, horizontal flip. Images
are resized bilinearly, labels with nearest neighbour only. Evaluation: the full
image, single scale (the V3 paper's setting; VOC padded to the evaluation size as
DeepLab does; multi-scale + flip: ``multiscale``).
"""

import os

import numpy as np
import tensorflow as tf

from mobilenet_tf.data import BAD_DATA, image_check, shapes, tfds_builder, without_autograph
from mobilenet_tf.data.classification import Split, batched

IGNORE_LABEL = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # --dataset folder images; labels are .png
MEAN_PIXEL = 127.5  # the padding value; the model maps it to 0 after its [-1, 1] rescaling

# Cityscapes label ids -> 19 train ids (cityscapesScripts helpers/labels.py); all others -> ignore.
# (label id, train id, name, colour)
CITYSCAPES_CLASSES = (
    (7, 0, "road", (128, 64, 128)),
    (8, 1, "sidewalk", (244, 35, 232)),
    (11, 2, "building", (70, 70, 70)),
    (12, 3, "wall", (102, 102, 156)),
    (13, 4, "fence", (190, 153, 153)),
    (17, 5, "pole", (153, 153, 153)),
    (19, 6, "traffic light", (250, 170, 30)),
    (20, 7, "traffic sign", (220, 220, 0)),
    (21, 8, "vegetation", (107, 142, 35)),
    (22, 9, "terrain", (152, 251, 152)),
    (23, 10, "sky", (70, 130, 180)),
    (24, 11, "person", (220, 20, 60)),
    (25, 12, "rider", (255, 0, 0)),
    (26, 13, "car", (0, 0, 142)),
    (27, 14, "truck", (0, 0, 70)),
    (28, 15, "bus", (0, 60, 100)),
    (31, 16, "train", (0, 80, 100)),
    (32, 17, "motorcycle", (0, 0, 230)),
    (33, 18, "bicycle", (119, 11, 32)),
)
CITYSCAPES_NAMES = [name for _, _, name, _ in CITYSCAPES_CLASSES]
CITYSCAPES_PALETTE = np.array([colour for *_, colour in CITYSCAPES_CLASSES], np.uint8)

CITYSCAPES_MANUAL_HELP = (
    "cityscapes needs a manual download: log in at https://www.cityscapes-dataset.com, download "
    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, put both zips in {manual_dir}, then rerun "
    "(TFDS prepares cityscapes/semantic_segmentation from them once)."
)


def cityscapes_lookup():
    """A 256-entry table: Cityscapes label id -> train id, everything else ``IGNORE_LABEL``."""
    table = np.full(256, IGNORE_LABEL, np.uint8)
    for label_id, train_id, _, _ in CITYSCAPES_CLASSES:
        table[label_id] = train_id
    return table


def map_cityscapes_labels(label):
    """uint8 label ids (any shape) -> uint8 train ids (``IGNORE_LABEL`` off the 19 classes)."""
    return tf.gather(tf.constant(cityscapes_lookup()), tf.cast(label, tf.int32))


def synthetic_split(training, num_examples, image_size, num_classes=5, seed=0):
    """Synthetic scenes (``shapes.synthetic_segmentation``), rendered once and cached in
    memory (S * S * 4 bytes per scene)."""
    ds = shapes.synthetic_segmentation(num_examples, image_size, num_classes, seed=seed + (0 if training else 10_000))
    return Split(ds.cache(), num_examples, num_classes, shapes.class_names(num_classes))


def cityscapes_split(split, data_dir=None, download=True, name="cityscapes/semantic_segmentation"):
    """TFDS Cityscapes (fine annotations) with labels mapped to the 19 train ids.

    The training split reads its files in random order (decoded 1024x2048 pairs
    are 8 MB each, so the example shuffle buffer stays small).
    """
    builder = tfds_builder.prepared_builder(name, data_dir, download, CITYSCAPES_MANUAL_HELP)
    ds = builder.as_dataset(split=split, shuffle_files=split == "train")
    ds = ds.map(without_autograph(lambda example: (example["image_left"],
                                                   map_cityscapes_labels(example["segmentation_label"]))),
                num_parallel_calls=tf.data.AUTOTUNE)
    return Split(ds, tfds_builder.num_examples(builder, split, ds), len(CITYSCAPES_CLASSES), list(CITYSCAPES_NAMES))


def folder_split(images_dir, labels_dir, num_classes, class_names=None, strict=False, check_cache=None):
    """Images and label PNGs paired by file stem (``a.jpg`` <-> ``a.png``); label values
    are train ids in [0, num_classes) or ``IGNORE_LABEL``.

    Every image and label is decoded once first, as training will
    (``image_check.check_files``, cached): a pair with an unreadable file is left
    out, as are images without a label and labels without an image; all of them
    are listed with their reason in the split's ``check`` report, or with
    ``strict`` the first raises ``ValueError``. ``check_cache``: the check's cache
    folder (default: the user cache; False: none).
    """
    for flag, directory in (("--images-dir", images_dir), ("--labels-dir", labels_dir)):
        if not directory or not os.path.isdir(directory):
            raise ValueError(f"`{flag}` {directory!r} is not a directory.")
    stem = lambda f: os.path.splitext(f)[0]
    labels = {stem(f): os.path.join(labels_dir, f)
              for f in sorted(os.listdir(labels_dir)) if f.lower().endswith(".png")}
    images = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    pairs = [(os.path.join(images_dir, f), labels[stem(f)]) for f in images if stem(f) in labels]
    if not pairs:
        raise ValueError(f"no image in {images_dir!r} has a label PNG of the same name in {labels_dir!r}.")
    image_stems = {stem(f) for f in images}
    unpaired = [(os.path.join(images_dir, f), f"image without a label: no {stem(f)}.png in {labels_dir}")
                for f in images if stem(f) not in labels]
    unpaired += [(path, f"label without an image: no {name}{{{','.join(IMAGE_EXTENSIONS)}}} in {images_dir}")
                 for name, path in labels.items() if name not in image_stems]
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    return paired_split(pairs, num_classes, names, strict=strict, check_cache=check_cache, unpaired=unpaired,
                        where=f"in {images_dir!r} and its label PNG in {labels_dir!r}")


def paired_split(pairs, num_classes, class_names, strict=False, check_cache=None, unpaired=(), where=""):
    """A ``Split`` of (image path, label PNG path) pairs, each file decoded once first
    (``image_check.check_files``, cached): a pair with an unreadable file is left out
    and listed with its reason in the split's ``check`` report (with ``unpaired``), or
    with ``strict`` the first raises ``ValueError``; then ``check_folder_pairs``."""
    good_images, report = image_check.check_files([image for image, _ in pairs], cache_dir=check_cache)
    good_labels, label_report = image_check.check_files([label for _, label in pairs], reader="pil",
                                                        cache_dir=check_cache)
    report = report.merge(label_report)
    report.unreadable.sort(key=lambda entry: entry[0])
    report.unpaired = list(unpaired)
    report.raise_if_strict(strict)
    good_images, good_labels = set(good_images), set(good_labels)
    pairs = [(image, label) for image, label in pairs if image in good_images and label in good_labels]
    if not pairs:
        raise ValueError(f"no image {where} both decode (e.g. {report.unreadable[0][0]}: "
                         f"{report.unreadable[0][1]}).")
    check_folder_pairs(pairs, num_classes)

    def load(image_path, label_path):
        image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
        # PIL reads label PNGs as stored: 8-bit grey values, or palette indices (VOC-style
        # PNGs), which tf.io.decode_png would turn into grey levels.
        label = tf.numpy_function(_read_label_png, [label_path], tf.uint8, stateful=False)
        label.set_shape((None, None, 1))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices(tuple(map(list, zip(*pairs))))
    ds = ds.map(without_autograph(load), tf.data.AUTOTUNE)
    return Split(ds, len(pairs), num_classes, list(class_names), check=report)


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOC_LABELS, VOC_AUGMENTED_LABELS = "SegmentationClass", "SegmentationClassAug"
VOC_HELP = ("PASCAL VOC 2012 is read from the devkit folder users download (host.robots.ox.ac.uk/pascal/VOC/voc2012, "
            "VOCtrainval_11-May-2012.tar): --data-dir is the folder holding VOCdevkit/VOC2012 (or VOC2012 itself); "
            "the SBD augmented labels (DeepLab's train_aug) go in VOC2012/SegmentationClassAug with their list "
            "ImageSets/Segmentation/train_aug.txt.")


def voc_palette():
    """The VOC colour map (256 x 3 uint8): class i's colour from the bits of i, as the devkit's
    ``VOClabelcolormap``; index 255 (ignore, the object borders) is (224, 224, 192)."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = colour
    return palette


def voc_root(data_dir):
    """The VOC2012 folder in ``data_dir`` (itself, VOC2012/ or VOCdevkit/VOC2012/)."""
    for candidate in (data_dir, os.path.join(data_dir, "VOC2012"), os.path.join(data_dir, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise ValueError(f"`--data-dir` {data_dir!r} has no VOCdevkit/VOC2012/JPEGImages. {VOC_HELP}")


def voc_split(data_dir, split="train", labels=VOC_LABELS, strict=False, check_cache=None):
    """A PASCAL VOC 2012 segmentation split from the devkit layout: the image ids of
    ``ImageSets/Segmentation/<split>.txt``, images ``JPEGImages/<id>.jpg``, labels
    ``<labels>/<id>.png`` (palette PNGs: the indices are the 21 class ids, 255 the
    ignored object borders; ``SegmentationClassAug``'s grey PNGs hold the same ids).

    A list naming a missing image or label raises ``ValueError`` naming it; unreadable
    files are skipped and reported as in ``folder_split`` (or raise with ``strict``).
    """
    root = voc_root(data_dir)
    list_file = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(list_file):
        found = sorted(f[:-4] for f in os.listdir(os.path.dirname(list_file)) if f.endswith(".txt")) \
            if os.path.isdir(os.path.dirname(list_file)) else []
        raise ValueError(f"no list {list_file} for the VOC split {split!r}; the devkit has {found}. {VOC_HELP}")
    with open(list_file) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    pairs = [(os.path.join(root, "JPEGImages", f"{name}.jpg"), os.path.join(root, labels, f"{name}.png"))
             for name in ids]
    for image, label in pairs:
        for path in (image, label):
            if not os.path.isfile(path):
                raise ValueError(f"{list_file} names {os.path.basename(path)[:-4]!r} but {path} does not exist. "
                                 f"{VOC_HELP}")
    return paired_split(pairs, len(VOC_CLASSES), VOC_CLASSES, strict=strict, check_cache=check_cache,
                        where=f"of {list_file} and its label in {os.path.join(root, labels)}")


LABEL_PNG_MODES = ("L", "P")  # 8-bit grey, 8-bit palette


def _read_label_png(path):
    from PIL import Image

    with Image.open(path.decode() if isinstance(path, bytes) else path) as label:
        return np.asarray(label, np.uint8)[..., None]


def check_folder_pairs(pairs, num_classes):
    """Early ``ValueError`` for a pair whose sizes differ, a label PNG that is not
    8-bit grey or palette, or label values outside [0, num_classes) other than
    ``IGNORE_LABEL`` (reads every label once)."""
    from PIL import Image

    for image_path, label_path in pairs:
        try:
            image = Image.open(image_path)
        except OSError as error:  # decodes in TensorFlow, but PIL cannot read its size
            raise ValueError(f"cannot read the size of image {image_path}: {error}") from None
        with image, Image.open(label_path) as label:
            if image.size != label.size:
                raise ValueError(f"image {image_path} is {image.size[0]}x{image.size[1]} but its label "
                                 f"{label_path} is {label.size[0]}x{label.size[1]}; they must be the same size.")
            if label.mode not in LABEL_PNG_MODES:
                raise ValueError(f"label {label_path} is a {label.mode!r} PNG; label PNGs must be single-channel "
                                 "8-bit (mode 'L', values = class ids) or palette (mode 'P', indices = class ids).")
        values = np.unique(_read_label_png(label_path))
        bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
        if bad.size:
            raise ValueError(f"label {label_path} has values {bad[:10].tolist()}: label PNGs must hold train ids "
                             f"in [0, {num_classes}) (--num-classes) or {IGNORE_LABEL} for 'ignore'.")


def check_labels(label, num_classes):
    """Fail on label values outside [0, num_classes) other than ``IGNORE_LABEL``."""
    label = tf.cast(label, tf.int32)
    bad = (label >= num_classes) & (label != IGNORE_LABEL)
    tf.debugging.assert_equal(tf.reduce_any(bad), False, message=(
        f"{BAD_DATA}label values must be train ids in [0, {num_classes}) or {IGNORE_LABEL} (ignore)"))
    return label


def random_scale_crop_flip(image, label, crop_size, scale_range=(0.5, 2.0), seed=0):
    """DeepLab's training augmentation on one example.

    Args:
        image: (H, W, 3) float32.
        label: (H, W, 1) int32.
        crop_size: (h, w) of the output.

    Returns:
        image (h, w, 3) float32, label (h, w, 1) int32; padding is ``MEAN_PIXEL`` /
        ``IGNORE_LABEL``.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.random.uniform((), scale_range[0], scale_range[1], seed=seed + 1)
    size = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label, size, method="nearest")
    pad_h, pad_w = tf.maximum(crop_size[0] - size[0], 0), tf.maximum(crop_size[1] - size[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings, constant_values=MEAN_PIXEL)
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)
    both = tf.concat([image, tf.cast(label, tf.float32)], axis=-1)
    both = tf.image.random_crop(both, (crop_size[0], crop_size[1], 4), seed=seed + 2)
    both = tf.image.random_flip_left_right(both, seed=seed + 3)
    return both[..., :3], tf.cast(both[..., 3:], tf.int32)


def pad_to(image, label, size):
    """DeepLab's evaluation input: the image (shrunk to fit, keeping its aspect, only if
    larger) padded at the bottom and right to ``size`` with ``MEAN_PIXEL``, the label
    with ``IGNORE_LABEL``: every labelled pixel is scored at its own resolution."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(1.0, tf.reduce_min(tf.constant(size, tf.float32) / shape))
    fitted = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, fitted, method="bilinear")
    label = tf.image.resize(label, fitted, method="nearest")
    paddings = [[0, size[0] - fitted[0]], [0, size[1] - fitted[1]], [0, 0]]
    return (tf.pad(image, paddings, constant_values=MEAN_PIXEL),
            tf.pad(label, paddings, constant_values=IGNORE_LABEL))


def make_pipeline(split, *, training, batch_size, crop_size=None, scale_range=(0.5, 2.0), eval_size=None,
                  eval_pad=False, shuffle_buffer=256, deterministic=False, seed=0):
    """Batched ``(float32 [0, 255] (B, h, w, 3), int32 (B, h, w, 1))``.

    Training: shuffled (``shuffle_buffer`` decoded examples; keep it small for
    large images), augmented (``random_scale_crop_flip`` to ``crop_size``),
    repeated. Evaluation: full images, resized to ``eval_size`` (labels by nearest
    neighbour) or with ``eval_pad`` padded to it (``pad_to``, DeepLab's VOC
    evaluation), not repeated.
    """
    def prepare(image, label):
        image = tf.cast(image, tf.float32)
        label = check_labels(label, split.num_classes)
        if training:
            image, label = random_scale_crop_flip(image, label, crop_size, scale_range, seed)
        elif eval_size is not None and eval_pad:
            image, label = pad_to(image, label, eval_size)
        elif eval_size is not None:
            image = tf.image.resize(image, eval_size, method="bilinear")
            label = tf.image.resize(label, eval_size, method="nearest")
        return tf.clip_by_value(image, 0.0, 255.0), label

    return batched(split.dataset, prepare, training=training, batch_size=batch_size,
                   num_examples=split.num_examples, shuffle_buffer=shuffle_buffer, deterministic=deterministic,
                   seed=seed)
