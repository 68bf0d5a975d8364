"""Detection input pipelines: TFDS COCO (2017 or 2014) or synthetic shapes.

Every source yields the same example: ``(image uint8 (H, W, 3), objects)`` where
``objects`` holds "boxes" (N, 4) float32 normalised [ymin, xmin, ymax, xmax] (TFDS's
own box format), "classes" (N,) int32 contiguous ids 1..C-1 (0 = background),
"crowd" (N,) bool, "area" (N,) float32 in pixels (COCO's segment area; 0 = use the
box) and "image_id" () int64.

Training (``make_train_pipeline``): optional colour jitter and zoom-out, the SSD
random crop, horizontal flip, resize to the model's square input, boxes cleaned
(clipped, degenerate and crowd boxes dropped) and padded to ``max_boxes``, then the
matcher's targets, all inside ``tf.data``. Evaluation (``make_eval_pipeline``):
resize only, with the id and original size for COCO json.
"""

import dataclasses

import tensorflow as tf

from mobilenet_tf.data import BAD_DATA, shapes, tfds_builder, without_autograph
from mobilenet_tf.data.classification import batched
from mobilenet_tf.heads.ssdlite import losses, matcher

MEAN_PIXEL = 127.5  # zoom-out canvas colour: 0 after the model's [-1, 1] rescaling
MAX_BOXES = 100  # COCO has at most 93 objects in an image
MIN_BOX_SIDE = 1e-3  # normalised; thinner boxes are dropped as degenerate
# SSD's crop: each trial picks one minimum IoU (None = keep the whole image).
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)
CROP_CANDIDATES = 32  # patches sampled at once per trial; the first that qualifies wins

# TFDS's 80 contiguous COCO labels (0..79, in category-id order) -> COCO category ids.
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
                     31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
                     56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
                     85, 86, 87, 88, 89, 90)
COCO_DATASETS = ("coco/2017", "coco/2014")


@dataclasses.dataclass
class DetectionSplit:
    """A split of ``(image, objects)`` examples (see the module docstring).

    ``category_ids[k]`` is the COCO json category id of contiguous class ``k``
    (index 0, the background, unused).
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: list
    category_ids: list


def synthetic_split(training, num_examples, image_size, num_classes=5, seed=0):
    """Synthetic shapes (``shapes.synthetic_detection``), ids 1..num_examples, rendered
    once and cached in memory (S * S * 3 bytes per scene)."""
    ds = shapes.synthetic_detection(num_examples, image_size, num_classes, seed=seed + (0 if training else 10_000))

    def convert(index, example):
        image, target = example
        valid = target["valid"]
        boxes = tf.boolean_mask(target["boxes"], valid)
        objects = {"boxes": boxes, "classes": tf.boolean_mask(target["classes"], valid),
                   "crowd": tf.zeros(tf.shape(boxes)[:1], tf.bool), "area": tf.zeros(tf.shape(boxes)[:1]),
                   "image_id": index + 1}
        return image, objects

    ds = ds.enumerate().map(without_autograph(convert), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    return DetectionSplit(ds, num_examples, num_classes, shapes.class_names(num_classes), list(range(num_classes)))


def coco_split(split, data_dir=None, download=True, name="coco/2017"):
    """TFDS COCO detection: labels 0..79 -> classes 1..80 (81 with the background);
    ``category_ids`` maps them back to COCO's ids for json."""
    if name not in COCO_DATASETS:
        raise ValueError(f"`dataset` must be one of {COCO_DATASETS}; got {name!r}.")
    builder = tfds_builder.prepared_builder(name, data_dir, download)
    ds = builder.as_dataset(split=split, shuffle_files=split == "train")

    def convert(example):
        objects = example["objects"]
        fields = ("bbox", "label", "is_crowd", "area")
        # Equal in real COCO; a malformed record (or mock data) is cut to the shortest.
        count = tf.reduce_min([tf.shape(objects[key])[0] for key in fields])
        bbox, label, crowd, area = (objects[key][:count] for key in fields)
        return example["image"], {"boxes": tf.cast(bbox, tf.float32), "classes": tf.cast(label, tf.int32) + 1,
                                  "crowd": tf.cast(crowd, tf.bool), "area": tf.cast(area, tf.float32),
                                  "image_id": tf.cast(example["image/id"], tf.int64)}

    ds = ds.map(without_autograph(convert), num_parallel_calls=tf.data.AUTOTUNE)
    names = ["background"] + list(builder.info.features["objects"]["label"].names)
    if len(names) != len(COCO_CATEGORY_IDS) + 1:
        raise ValueError(f"{name} has {len(names) - 1} labels; expected COCO's 80.")
    return DetectionSplit(ds, tfds_builder.num_examples(builder, split, ds), len(names), names,
                          [0, *COCO_CATEGORY_IDS])


def clean_boxes(boxes, classes, keep, num_classes, min_side=MIN_BOX_SIDE):
    """Clip boxes to the image and mark what cannot be trained on.

    Args:
        boxes: (N, 4) normalised; classes: (N,) int; keep: (N,) bool, False for
            objects already excluded (crowd, padding).

    Returns:
        boxes (N, 4) clipped to [0, 1], valid (N,) bool (kept, finite, sides >=
        ``min_side`` after clipping), dropped () int32: boxes that were kept but
        are invalid. Evaluation passes ``min_side=0`` (COCO scores even sub-pixel
        ground truth; only inverted or non-finite boxes go).

    Raises:
        ValueError (eager; in ``tf.data`` an InvalidArgumentError with the same
        message): a kept object's class is outside [1, num_classes) -- a label
        mapping bug, not bad data to skip.
    """
    classes = tf.cast(classes, tf.int32)
    out_of_range = keep & ((classes < 1) | (classes >= num_classes))
    message = f"{BAD_DATA}object class ids must be in [1, {num_classes}) (`num_classes` counts the background 0)"
    if tf.executing_eagerly():
        if bool(tf.reduce_any(out_of_range)):
            bad = tf.boolean_mask(classes, out_of_range).numpy().tolist()
            raise ValueError(f"{message}; got {bad}.")
    else:
        tf.debugging.assert_equal(tf.reduce_any(out_of_range), False, message=message)
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    boxes = tf.clip_by_value(tf.where(finite[:, None], boxes, 0.0), 0.0, 1.0)
    sides = boxes[:, 2:] - boxes[:, :2]
    valid = keep & finite & tf.reduce_all((sides > 0) & (sides >= min_side), axis=-1)
    return boxes, valid, tf.reduce_sum(tf.cast(keep & ~valid, tf.int32))


def _seed(seed, k):
    """The k-th op seed derived from ``seed`` (ops sharing a seed draw the same numbers)."""
    return None if seed is None else seed * 16 + k


def random_ssd_crop(image, boxes, valid, seed=None):
    """SSD's data augmentation crop (Liu et al. 2016, section 2.2).

    Pick a minimum IoU from ``CROP_MIN_IOUS``; sample ``CROP_CANDIDATES`` patches
    (sides 0.3-1 of the image, pixel aspect ratio 0.5-2) and take the first that
    contains the centre of at least one valid box and overlaps one of those by at
    least that IoU. Boxes whose centre falls outside are dropped, the others
    clipped to the patch. No qualifying patch (or the "None" choice, or no valid
    box) keeps the whole image.

    Args:
        image: (H, W, 3); boxes: (N, 4) normalised; valid: (N,) bool.

    Returns:
        image (h, w, 3), boxes (N, 4) normalised to the patch, valid (N,).
    """
    choice = tf.random.uniform((), 0, len(CROP_MIN_IOUS), tf.int32, seed=_seed(seed, 1))
    min_ious = tf.constant([-1.0 if v is None else v for v in CROP_MIN_IOUS])
    min_iou = tf.gather(min_ious, choice)
    sides = tf.random.uniform((CROP_CANDIDATES, 2), 0.3, 1.0, seed=_seed(seed, 2))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = sides[:, 1] * shape[1] / (sides[:, 0] * shape[0])  # width / height in pixels
    corners = tf.random.uniform((CROP_CANDIDATES, 2), seed=_seed(seed, 3)) * (1.0 - sides)
    patches = tf.concat([corners, corners + sides], axis=-1)  # (K, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    inside = (tf.reduce_all(centres[:, None, :] > patches[None, :, :2], axis=-1)
              & tf.reduce_all(centres[:, None, :] < patches[None, :, 2:], axis=-1) & valid[:, None])  # (N, K)
    overlap = tf.reduce_max(tf.where(inside, matcher.iou(boxes, patches), -1.0), axis=0)  # (K,)
    ok = (ratio >= 0.5) & (ratio <= 2.0) & tf.reduce_any(inside, axis=0) & (overlap >= min_iou)
    use_crop = (min_iou >= 0) & tf.reduce_any(ok)
    first = tf.argmax(tf.cast(ok, tf.int32))  # the first qualifying patch
    patch = tf.where(use_crop, tf.gather(patches, first), [0.0, 0.0, 1.0, 1.0])
    keep = tf.where(use_crop, tf.gather(inside, first, axis=1), valid)

    top_left = tf.cast(tf.floor(patch[:2] * shape), tf.int32)
    bottom_right = tf.maximum(tf.cast(tf.math.ceil(patch[2:] * shape), tf.int32), top_left + 1)
    image = image[top_left[0]:bottom_right[0], top_left[1]:bottom_right[1]]
    # Boxes in the pixel-exact patch's coordinates.
    origin = tf.cast(top_left, tf.float32) / shape
    extent = tf.cast(bottom_right - top_left, tf.float32) / shape
    offset, scale = tf.tile(origin, [2]), tf.tile(extent, [2])
    boxes = tf.clip_by_value((boxes - offset) / scale, 0.0, 1.0)
    return image, boxes, keep


def random_zoom_out(image, boxes, max_scale=4.0, seed=None):
    """SSD's "expansion": with probability 1/2 put the image on a canvas up to
    ``max_scale`` times larger, filled with ``MEAN_PIXEL`` (helps small objects)."""
    scale = tf.where(tf.random.uniform((), seed=_seed(seed, 4)) < 0.5,
                     tf.random.uniform((), 1.0, max_scale, seed=_seed(seed, 5)), 1.0)
    shape = tf.shape(image)[:2]
    canvas = tf.cast(tf.cast(shape, tf.float32) * scale, tf.int32)
    offset = tf.cast(tf.random.uniform((2,), seed=_seed(seed, 6)) * tf.cast(canvas - shape, tf.float32), tf.int32)
    padded = tf.pad(image - MEAN_PIXEL, [[offset[0], canvas[0] - shape[0] - offset[0]],
                                          [offset[1], canvas[1] - shape[1] - offset[1]], [0, 0]]) + MEAN_PIXEL
    size, canvas_f = tf.cast(shape, tf.float32), tf.cast(canvas, tf.float32)
    start = tf.tile(tf.cast(offset, tf.float32) / canvas_f, [2])
    return padded, start + boxes * tf.tile(size / canvas_f, [2])


def colour_jitter(image, seed=None):
    """Brightness, contrast, saturation and hue jitter (SSD's photometric distortions)
    on a float [0, 255] image."""
    image = image / 255.0
    image = tf.image.random_brightness(image, 32.0 / 255.0, seed=_seed(seed, 7))
    image = tf.image.random_contrast(image, 0.5, 1.5, seed=_seed(seed, 8))
    image = tf.image.random_saturation(image, 0.5, 1.5, seed=_seed(seed, 9))
    image = tf.image.random_hue(image, 0.05, seed=_seed(seed, 10))
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def flip_left_right(image, boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.image.flip_left_right(image), tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def random_flip(image, boxes, seed=None):
    """``flip_left_right`` with probability 1/2."""
    flip = tf.random.uniform((), seed=_seed(seed, 11)) < 0.5
    return tf.cond(flip, lambda: flip_left_right(image, boxes), lambda: (image, boxes))


def _pad_rows(tensor, rows):
    """The first ``rows`` rows of ``tensor``, zero-padded to exactly ``rows``."""
    tensor = tensor[:rows]
    return tf.pad(tensor, [[0, rows - tf.shape(tensor)[0]]] + [[0, 0]] * (tensor.shape.rank - 1))


def pad_objects(boxes, classes, valid, max_boxes=MAX_BOXES):
    """Pad (or truncate, keeping valid boxes first) to ``max_boxes`` rows."""
    order = tf.argsort(tf.cast(~valid, tf.int32), stable=True)  # valid ones first
    return tuple(_pad_rows(tf.gather(t, order), max_boxes) for t in (boxes, tf.cast(classes, tf.int32), valid))


def augment(image, objects, num_classes, input_size, *, zoom_out=False, jitter=False, seed=None):
    """One training example -> image float32 (S, S, 3) in [0, 255], boxes (N, 4),
    classes (N,), valid (N,) (crowd, degenerate and cropped-away boxes invalid)."""
    image = tf.cast(image, tf.float32)
    boxes, valid, _ = clean_boxes(objects["boxes"], objects["classes"], ~objects["crowd"], num_classes)
    if jitter:
        image = colour_jitter(image, seed)
    if zoom_out:
        image, boxes = random_zoom_out(image, boxes, seed=seed)
    image, boxes, valid = random_ssd_crop(image, boxes, valid, seed)
    image, boxes = random_flip(image, boxes, seed)
    image = tf.image.resize(image, (input_size, input_size))
    boxes, valid, _ = clean_boxes(boxes, objects["classes"], valid, num_classes)
    return tf.clip_by_value(image, 0.0, 255.0), boxes, objects["classes"], valid


def encode_targets(boxes, classes, valid, anchors, max_boxes=MAX_BOXES):
    """Padded ground truth -> the model's training targets: {"boxes": (A, 5) packed
    codes + matched flag, "classes": (A,) int32, ``matcher.BACKGROUND`` = -1}."""
    boxes, classes, valid = pad_objects(boxes, classes, valid, max_boxes)
    box_targets, class_targets, matched = matcher.assign_targets(boxes, classes, valid, anchors)
    return {"boxes": losses.pack_box_targets(box_targets, matched), "classes": class_targets}


def make_train_pipeline(split, anchors, *, input_size, batch_size, zoom_out=False, jitter=False,
                        shuffle_buffer=1000, max_boxes=MAX_BOXES, deterministic=False, seed=0):
    """Repeated, shuffled, augmented batches ``(images (B, S, S, 3) float32 in [0, 255],
    {"boxes": (B, A, 5), "classes": (B, A)})`` for ``model.fit``."""
    anchors = tf.constant(anchors, tf.float32)

    def prepare(image, objects):
        image, boxes, classes, valid = augment(image, objects, split.num_classes, input_size, zoom_out=zoom_out,
                                               jitter=jitter, seed=seed)
        return image, encode_targets(boxes, classes, valid, anchors, max_boxes)

    return batched(split.dataset, prepare, training=True, batch_size=batch_size, num_examples=split.num_examples,
                   shuffle_buffer=shuffle_buffer, deterministic=deterministic, seed=seed)


def eval_info(shape, objects, num_classes, max_boxes=MAX_BOXES):
    """One example's evaluation info (see ``make_eval_pipeline``); ``shape``: the
    original image's."""
    num = tf.shape(objects["boxes"])[0]
    boxes, valid, dropped = clean_boxes(objects["boxes"], objects["classes"], tf.ones((num,), tf.bool),
                                        num_classes, min_side=0.0)
    # Valid boxes first; those beyond ``max_boxes`` cannot be kept and are counted as dropped.
    order = tf.argsort(tf.cast(~valid, tf.int32), stable=True)
    overflow = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32)) - max_boxes, 0)
    padded = {key: _pad_rows(tf.gather(value, order), max_boxes) for key, value in dict(
        boxes=boxes, classes=tf.cast(objects["classes"], tf.int32), crowd=objects["crowd"],
        area=objects["area"], valid=valid).items()}
    return {"image_id": objects["image_id"], "height": shape[0], "width": shape[1], "dropped": dropped + overflow,
            **padded}


def make_eval_pipeline(split, *, input_size, batch_size, max_boxes=MAX_BOXES):
    """Finite batches of ``(images (B, S, S, 3) float32, info)``; ``info`` has
    "image_id", "height", "width" (the original size), and padded ground truth
    "boxes" (B, M, 4), "classes", "crowd", "area", "valid" (B, M) for COCO json
    (M = ``max_boxes``, valid boxes first), and "dropped" (B,): boxes left out, as
    invalid or as beyond ``max_boxes``."""

    def prepare(image, objects):
        resized = tf.image.resize(tf.cast(image, tf.float32), (input_size, input_size))
        return tf.clip_by_value(resized, 0.0, 255.0), eval_info(tf.shape(image), objects, split.num_classes, max_boxes)

    return batched(split.dataset, prepare, training=False, batch_size=batch_size, num_examples=split.num_examples,
                   shuffle_buffer=1)


def ground_truth_images(eval_ds):
    """Per-image dicts (numpy) for ``coco_eval.ground_truth`` from ``make_eval_pipeline``
    batches, and the number of invalid boxes dropped."""
    images, dropped = [], 0
    for _, info in eval_ds.as_numpy_iterator():
        for i in range(len(info["image_id"])):
            images.append({"id": int(info["image_id"][i]), "height": int(info["height"][i]),
                           "width": int(info["width"][i]),
                           **{key: info[key][i] for key in ("boxes", "classes", "crowd", "area", "valid")}})
            dropped += int(info["dropped"][i])
    return images, dropped

