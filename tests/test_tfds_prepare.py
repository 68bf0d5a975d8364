"""Real, offline TFDS preparation (``download_and_prepare`` end to end, no
``tfds.testing.mock_data``) of the datasets the recipes use, and the messages
``tfds_builder.prepared_builder`` gives when preparation fails.

ImageNet 2012 and Cityscapes are prepared from tiny manual-download archives in
their real layouts (tests/tfds_archives.py); the web-download datasets (imagenette,
coco/2017, lfw) are run up to their download step, which a patched DownloadManager
stops with a sentinel."""

import ast
import importlib.metadata as metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import mobilenet_tf
from mobilenet_tf._keras import keras
from mobilenet_tf.data import classification, tfds_builder

sys.path.insert(0, os.path.dirname(__file__))
import tfds_archives  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- ImageNet 2012


@pytest.mark.slow(seconds=5)
def test_imagenet2012_prepares_from_manual_tars_and_trains(tmp_path):
    expected = tfds_archives.write_imagenet2012_manual(tmp_path / tfds_archives.MANUAL)
    train = classification.tfds_split("imagenet2012", "train", str(tmp_path))  # prepares it
    val = classification.tfds_split("imagenet2012", "validation", str(tmp_path))

    assert (train.num_examples, val.num_examples) == (len(expected["train"]), len(expected["validation"]))
    assert train.num_classes == 1000 and train.class_names[65] == "n01751748"
    # The validation file <-> label pairing comes from TFDS' bundled validation_labels.txt.
    builder = tfds.builder("imagenet2012", data_dir=str(tmp_path))
    for split in ("train", "validation"):
        found = {ex["file_name"].decode(): int(ex["label"])
                 for ex in builder.as_dataset(split=split).as_numpy_iterator()}
        assert found == expected[split]
    # Each image is its class colour: the (image, label) pairs tfds_split yields match.
    for split in (train, val):
        for image, label in split.dataset.as_numpy_iterator():
            mean = image.reshape(-1, 3).mean(0)
            np.testing.assert_allclose(mean, tfds_archives.class_colour(int(label)), atol=6)

    keras.utils.set_random_seed(0)
    model = mobilenet_tf.build("v3_small", input_shape=(32, 32, 3), classes=1000, alpha=0.35,
                               include_preprocessing=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=True)  # one step: tracing would cost more than it saves
    before = [w.copy() for w in model.get_weights()]
    train_ds = classification.make_pipeline(train, training=True, batch_size=4, image_size=32, deterministic=True)
    history = model.fit(train_ds, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    val_ds = classification.make_pipeline(val, training=False, batch_size=2, image_size=32)
    assert sum(int(labels.shape[0]) for _, labels in val_ds) == 4
    loss, accuracy = model.evaluate(val_ds, verbose=0)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0


# ---------------------------------------------------------------- Cityscapes


@pytest.mark.slow(seconds=10)
def test_cityscapes_prepares_from_manual_zips_and_trains_lraspp(tmp_path):
    from mobilenet_tf.heads import segmentation
    from mobilenet_tf.heads.segmentation import data, metrics as seg_metrics

    expected = tfds_archives.write_cityscapes_manual(tmp_path / tfds_archives.MANUAL)
    train = data.cityscapes_split("train", str(tmp_path))  # prepares cityscapes/semantic_segmentation
    val = data.cityscapes_split("validation", str(tmp_path))
    assert (train.num_examples, val.num_examples) == (2, 1)
    assert train.num_classes == 19 and train.class_names[0] == "road"

    # Pixels and labels survive preparation exactly; labels come out as train ids.
    (image, label), = val.dataset.as_numpy_iterator()
    scene_image, scene_labels = tfds_archives.cityscapes_scene(expected["validation"][0][1])
    np.testing.assert_array_equal(image, scene_image)
    np.testing.assert_array_equal(label[..., 0], data.cityscapes_lookup()[scene_labels])
    assert set(np.unique(label)) == {0, 1, 2, 10, 13, data.IGNORE_LABEL}  # road sidewalk building sky car

    crop, eval_size = 64, (64, 128)
    train_ds = data.make_pipeline(train, training=True, batch_size=2, crop_size=(crop, crop),
                                  scale_range=(1 / 32, 1 / 16), deterministic=True)
    val_ds = data.make_pipeline(val, training=False, batch_size=1, eval_size=eval_size)

    def build(height, width):  # as recipes/segmentation.py builds it, tiny
        return segmentation.build_lraspp("v3_small", num_classes=19, input_shape=(height, width, 3), alpha=0.35,
                                   pool_crop_size=(crop, crop))

    keras.utils.set_random_seed(0)
    model = build(crop, crop)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=seg_metrics.ignore_label_crossentropy,
                  metrics=[seg_metrics.mean_iou_metric(19)], run_eagerly=True)  # one step: no graph trace
    history = model.fit(train_ds, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    evaluator = build(*eval_size)  # the recipe's Evaluator: same weights, evaluation size
    evaluator.set_weights(model.get_weights())
    matrix = seg_metrics.ConfusionMatrix(evaluator, 19)(val_ds)
    labelled = sum(int(np.sum(labels.numpy() != data.IGNORE_LABEL)) for _, labels in val_ds)
    assert labelled > 0 and matrix.sum() == labelled
    assert set(np.nonzero(matrix.sum(1))[0]) == {0, 1, 2, 10, 13}  # the scene's classes, as truth
    results = seg_metrics.scores(matrix, val.class_names)
    assert 0.0 <= results["miou"] <= 1.0 and 0.0 <= results["pixel_accuracy"] <= 1.0


# ---------------------------------------------------------------- web downloads


class DownloadReached(Exception):
    """Raised by the patched DownloadManager: preparation got as far as downloading."""


def _stop_at_download(monkeypatch):
    urls = []

    def stop(self, url_or_urls, *args, **kwargs):
        urls.extend(tf.nest.flatten(url_or_urls))
        raise DownloadReached(f"would download {url_or_urls}")

    for method in ("download", "download_and_extract", "download_kaggle_data"):
        monkeypatch.setattr(tfds.download.DownloadManager, method, stop)
    return urls


def _imagenette(data_dir):
    return classification.tfds_split("imagenette", "train", data_dir)


def _coco(data_dir):
    from mobilenet_tf.heads.ssdlite import data

    return data.coco_split("train", data_dir)


def _lfw(data_dir):
    from mobilenet_tf.heads.facenet import data

    return data.lfw_split(data_dir)


@pytest.mark.parametrize("name, load, host", [
    ("imagenette", _imagenette, "s3.amazonaws.com/fast-ai-imageclas/"),
    ("coco/2017", _coco, "images.cocodataset.org/"),
    ("lfw", _lfw, "ndownloader.figshare.com/"),
])
def test_web_dataset_preparation_reaches_its_download(tmp_path, monkeypatch, name, load, host):
    urls = _stop_at_download(monkeypatch)
    with pytest.raises(ValueError) as info:
        load(str(tmp_path))  # the recipes' loaders, through prepared_builder
    assert isinstance(info.value.__cause__, DownloadReached), repr(info.value.__cause__)
    assert f"could not download or prepare {name!r} in {str(tmp_path)!r}: DownloadReached" in str(info.value)
    assert urls and all(host in url for url in urls), urls


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize("error, expected", [
    (ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources"),
     "Python module 'importlib_resources' is missing (ModuleNotFoundError: No module named 'importlib_resources'). "
     "Install it into this Python environment with `pip install importlib_resources`, then rerun."),
    # TFDS' lazy imports re-raise with a longer message (and may drop ``name``).
    (ImportError("No module named 'cv2'\nFailed importing cv2. This likely means that the dataset requires "
                 "additional dependencies"),
     "Python module 'cv2' is missing (ImportError: No module named 'cv2'). Install it into this Python "
     "environment with `pip install opencv-python`, then rerun."),
    (ImportError("cannot import name 'Resampling' from 'PIL.Image'", name="PIL.Image"),
     "importing from Python module 'PIL.Image' failed (ImportError: cannot import name 'Resampling' from "
     "'PIL.Image'); its installed version does not match. Upgrade it with `pip install -U pillow`, then rerun."),
])
def test_import_error_during_preparation_names_the_module_and_fix(tmp_path, monkeypatch, error, expected):
    def prepare(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", prepare)
    # The manual files are there: the import error must not read as a manual-download problem.
    tfds_archives.write_imagenet2012_manual(tmp_path / tfds_archives.MANUAL, num_validation=1, train_per_class=1)
    with pytest.raises(ValueError) as info:
        classification.tfds_split("imagenet2012", "train", str(tmp_path))
    assert str(info.value) == "could not prepare TFDS dataset 'imagenet2012': " + expected
    assert info.value.__cause__ is error


def test_import_error_while_wrapped_is_still_found(tmp_path, monkeypatch):
    def prepare(self, *args, **kwargs):
        try:
            import a_module_that_is_not_installed  # noqa: F401
        except ImportError as missing:
            raise RuntimeError("generation failed") from missing

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", prepare)
    with pytest.raises(ValueError, match="Python module 'a_module_that_is_not_installed' is missing.*"
                                         "`pip install a_module_that_is_not_installed`"):
        tfds_builder.prepared_builder("imagenette", str(tmp_path))


@pytest.mark.slow(seconds=5)
def test_missing_importlib_resources_is_reported_as_such_not_as_manual_download(tmp_path):
    """The user's report, reproduced for real: importlib_resources hidden from a fresh
    interpreter, the manual tars in place, ``tfds_split`` prepares imagenet2012."""
    tfds_archives.write_imagenet2012_manual(tmp_path / tfds_archives.MANUAL, num_validation=1, train_per_class=1)
    script = textwrap.dedent(f"""
        import sys

        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "importlib_resources":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, Hide())
        from mobilenet_tf.data import classification
        try:
            classification.tfds_split("imagenet2012", "train", {str(tmp_path)!r})
        except ValueError as error:
            print("MESSAGE", error)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), cwd=ROOT)
    assert "MESSAGE" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    message = proc.stdout.split("MESSAGE", 1)[1]
    assert "could not prepare TFDS dataset 'imagenet2012': Python module 'importlib_resources' is missing" in message
    assert "`pip install importlib_resources`" in message and "manual download" not in message, message


@pytest.mark.parametrize("dataset", ["imagenet2012", "cityscapes"])
def test_empty_manual_dir_gives_the_manual_download_message_with_path(tmp_path, dataset):
    from mobilenet_tf.heads.segmentation import data

    manual_dir = tmp_path / tfds_archives.MANUAL
    manual_dir.mkdir(parents=True)
    with pytest.raises(ValueError) as info:
        if dataset == "imagenet2012":
            classification.tfds_split("imagenet2012", "train", str(tmp_path))
        else:
            data.cityscapes_split("train", str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{dataset} needs a manual download")
    files = (tfds_archives.IMAGENET_TRAIN_TAR, tfds_archives.IMAGENET_VAL_TAR) if dataset == "imagenet2012" \
        else tfds_archives.CITYSCAPES_ZIPS
    assert f"Missing from {manual_dir}: {', '.join(sorted(files))}." in message


def test_one_missing_cityscapes_zip_is_named(tmp_path):
    from mobilenet_tf.heads.segmentation import data

    manual_dir = tmp_path / tfds_archives.MANUAL
    manual_dir.mkdir(parents=True)
    (manual_dir / "leftImg8bit_trainvaltest.zip").write_bytes(b"")
    with pytest.raises(ValueError, match=f"Missing from {manual_dir}: gtFine_trainvaltest.zip\\."):
        data.cityscapes_split("train", str(tmp_path))


def test_manual_files_present_but_unreadable_report_the_real_error(tmp_path):
    manual_dir = tmp_path / tfds_archives.MANUAL
    manual_dir.mkdir(parents=True)
    for name in (tfds_archives.IMAGENET_TRAIN_TAR, tfds_archives.IMAGENET_VAL_TAR):
        (manual_dir / name).write_bytes(b"this is not a tar archive" * 40)  # e.g. a truncated download
    with pytest.raises(ValueError) as info:
        classification.tfds_split("imagenet2012", "train", str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"could not prepare 'imagenet2012' in {str(tmp_path)!r} from the manual-download "
                              f"files in {str(manual_dir)!r} (they are all there")
    assert "needs a manual download" not in message
    assert "ReadError" in message or "tar" in message.lower()


def test_unknown_dataset_is_reported_with_the_suggestion_and_hint_not_every_name(tmp_path):
    with pytest.raises(ValueError) as info:
        classification.tfds_split("imagenet2013", "train", str(tmp_path))
    message = str(info.value)
    assert message.startswith("unknown dataset 'imagenet2013': Dataset imagenet2013 not found.")
    assert "imagenet2013 -> imagenet2012" in message and message.endswith("image-classification dataset name.")
    assert "abstract_reasoning" not in message and len(message) < 600  # not TFDS' list of all datasets


# ---------------------------------------------------------------- declared dependencies


def _declared_requirements():
    """install_requires + the "test" extra, read from setup.py (not from the possibly
    stale metadata of the editable install)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                if k.arg in ("install_requires", "extras_require")}
    return keywords["install_requires"] + keywords["extras_require"]["test"]


def _installed_closure(requirements):
    """Canonical names of every installed distribution these requirements pull in."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [(r, "") for r in requirements]
    while todo:
        text, extra = todo.pop()
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in ("", *requirement.extras):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                requires = metadata.distribution(name).requires or []
            except metadata.PackageNotFoundError:
                continue
            todo += [(r, wanted) for r in requires]
    return {name for name, _ in seen}


PREPARE_ALL = """
import json, sys
sys.path.insert(0, {tests!r})
import tensorflow_datasets as tfds
import tfds_archives
from mobilenet_tf.data import tfds_builder

tfds_archives.prepare_imagenet2012({data_dir!r} + "/a", num_validation=1, train_per_class=1)
tfds_archives.prepare_cityscapes({data_dir!r} + "/b", layout={{"train": (("aachen", 1),), "val": (("lindau", 1),),
                                                            "test": (("bonn", 1),)}})

class Stop(Exception):
    pass

def stop(self, *args, **kwargs):
    raise Stop()

tfds.download.DownloadManager.download_and_extract = tfds.download.DownloadManager.download = stop
for name in ("imagenette", "coco/2017", "lfw"):
    try:
        tfds_builder.prepared_builder(name, {data_dir!r} + "/c")
    except ValueError as error:
        assert isinstance(error.__cause__, Stop), repr(error.__cause__)
print("MODULES", json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


@pytest.mark.slow(seconds=6)
def test_preparation_imports_only_declared_dependencies(tmp_path):
    """Every third-party module that real preparation of imagenet2012 and cityscapes
    (and imagenette, coco/2017, lfw up to their download) imports belongs to a
    distribution that setup.py's requirements pull in, so a fresh
    ``pip install -e ".[test]"`` has it (tensorflow-datasets 4.9.10 imports
    importlib_resources without declaring it for Python >= 3.9)."""
    script = PREPARE_ALL.format(tests=os.path.dirname(__file__), data_dir=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), cwd=ROOT)
    assert "MODULES" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    modules = json.loads(proc.stdout.split("MODULES", 1)[1])
    from packaging.utils import canonicalize_name

    closure = _installed_closure(_declared_requirements()) | {"mobilenet-tf"}
    providers = metadata.packages_distributions()
    undeclared = {module: providers[module] for module in modules if module in providers
                  and not any(canonicalize_name(d) in closure for d in providers[module])}
    assert "importlib_resources" in modules  # what tensorflow-datasets needed and nobody declared
    assert not undeclared, f"imported during preparation but not pulled in by setup.py: {undeclared}"
