"""Folder datasets decode every file before training (mobilenet_tf.data.image_check):
unreadable files are skipped and listed (or refused with --strict-data), verdicts are
cached, and the ImageNet, FaceNet and LR-ASPP folder readers use it."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import load_recipe, run_recipe_in_process
from mobilenet_tf.data import classification, image_check
from mobilenet_tf.heads.facenet import data as face_data
from mobilenet_tf.heads.segmentation import data as seg_data

TRUNCATED = "jpeg::Uncompress failed"
NOT_AN_IMAGE = "Unknown image file format"
EMPTY = "empty file (0 bytes)"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every check caches under this test's tmp dir, never in the user's cache."""
    path = tmp_path / "check_cache"
    monkeypatch.setenv(image_check.CACHE_ENV, str(path))
    return path


def _rgb(rng, h=40, w=40):
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _save(path, array, fmt=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kwargs)


def _truncated_jpeg(path, rng):
    """A JPEG cut in half: its header is intact (PIL's verify() accepts it) but it does not decode."""
    _save(path, _rgb(rng), "JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _class_folders(root, seed=0):
    """Two class folders: good JPEG / PNG / grayscale / RGBA images and the three kinds
    of bad file users met. Returns {file name: expected reason or None}."""
    rng = np.random.default_rng(seed)
    _save(root / "cat" / "rgb.jpg", _rgb(rng), "JPEG")
    _save(root / "cat" / "rgb.png", _rgb(rng), "PNG")
    _save(root / "cat" / "gray.jpg", rng.integers(0, 255, (30, 20), dtype=np.uint8), "JPEG")
    _truncated_jpeg(root / "cat" / "truncated.jpg", rng)
    _save(root / "dog" / "gray.png", rng.integers(0, 255, (20, 30), dtype=np.uint8), "PNG")
    _save(root / "dog" / "rgba.png", rng.integers(0, 255, (24, 24, 4), dtype=np.uint8), "PNG")
    _save(root / "dog" / "rgb.jpg", _rgb(rng), "JPEG")
    (root / "dog" / "text.jpg").write_text("this is not a JPEG")
    (root / "dog" / "zero.jpg").write_bytes(b"")
    return {"cat/rgb.jpg": None, "cat/rgb.png": None, "cat/gray.jpg": None, "cat/truncated.jpg": TRUNCATED,
            "dog/gray.png": None, "dog/rgba.png": None, "dog/rgb.jpg": None, "dog/text.jpg": NOT_AN_IMAGE,
            "dog/zero.jpg": EMPTY}


def test_check_skips_exactly_the_bad_files_with_their_reason_and_the_rest_trains(tmp_path):
    expected = _class_folders(tmp_path / "data")
    paths = [str(tmp_path / "data" / name) for name in sorted(expected)]
    good, report = image_check.check_files(paths)
    assert good == [p for p, name in zip(paths, sorted(expected)) if expected[name] is None]
    assert [path for path, _ in report.unreadable] == [p for p, name in zip(paths, sorted(expected))
                                                       if expected[name]]
    for path, reason in report.unreadable:
        assert expected[os.path.relpath(path, tmp_path / "data")] in reason, (path, reason)
        assert "{{" not in reason and "[Op:" not in reason  # TensorFlow's wrapping is stripped
    assert report.checked == 9 and report.decoded == 9 and report.unpaired == []

    # What passes the check passes training: the folder split decodes all of it in tf.data.
    split = classification.folder_split(str(tmp_path / "data"))
    assert split.num_examples == 6 and split.class_names == ["cat", "dog"]
    assert len(split.check.unreadable) == 3
    batches = classification.make_pipeline(split, training=False, batch_size=4, image_size=16)
    images = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    assert images.shape == (6, 16, 16, 3)

    # The run directory's list and the one-line summary.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = image_check.write_skipped(split.check, str(run_dir))
    listing = run_dir / image_check.SKIPPED_FILE
    assert summary == f"image check: 3 of 9 files unreadable, skipped; listed in {listing}"
    lines = [line.split("\t") for line in listing.read_text().splitlines()]
    assert [os.path.relpath(path, tmp_path / "data") for path, _ in lines] == \
        ["cat/truncated.jpg", "dog/text.jpg", "dog/zero.jpg"]
    assert TRUNCATED in lines[0][1] and NOT_AN_IMAGE in lines[1][1] and lines[2][1] == EMPTY
    # A clean rerun removes a stale list.
    assert image_check.write_skipped(image_check.CheckReport(files={"x", "y"}), str(run_dir)) == \
        "image check: 2 files, all readable"
    assert not listing.exists()


def test_strict_refuses_naming_the_first_bad_file(tmp_path):
    _class_folders(tmp_path / "data")
    first = re.escape(str(tmp_path / "data" / "cat" / "truncated.jpg"))
    with pytest.raises(ValueError, match=rf"--strict-data: {first}: {TRUNCATED}.*; 2 more files would be skipped"):
        classification.folder_split(str(tmp_path / "data"), strict=True)
    (tmp_path / "bad" / "a").mkdir(parents=True), (tmp_path / "bad" / "b").mkdir()
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of its 1 images decodes"):
        classification.folder_split(str(tmp_path / "bad"))


def test_cache_makes_a_rerun_decode_nothing_and_rechecks_changed_files(tmp_path, monkeypatch, cache_dir):
    expected = _class_folders(tmp_path / "data")
    paths = [str(tmp_path / "data" / name) for name in sorted(expected)]
    decoded = []
    real_decode = image_check.decode
    monkeypatch.setattr(image_check, "decode", lambda path, reader="tf": decoded.append(path) or
                        real_decode(path, reader))

    first = image_check.check_files(paths)
    assert len(decoded) == 9 and first[1].decoded == 9
    assert len(list(cache_dir.glob("*.json"))) == 2  # one cache file per folder
    decoded.clear()
    again = image_check.check_files(paths)
    assert decoded == [] and again[1].decoded == 0
    assert again[0] == first[0] and again[1].unreadable == first[1].unreadable

    # A repaired file (new size and mtime) and a touched one (same size, new mtime) are
    # decoded again; the others still come from the cache.
    repaired = tmp_path / "data" / "cat" / "truncated.jpg"
    _save(repaired, _rgb(np.random.default_rng(1)), "JPEG")
    touched = tmp_path / "data" / "dog" / "rgb.jpg"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    good, report = image_check.check_files(paths)
    assert sorted(decoded) == sorted([str(repaired), str(touched)])
    assert str(repaired) in good and len(report.unreadable) == 2

    # Another reader has its own verdicts; a corrupt cache file is ignored, not fatal.
    decoded.clear()
    image_check.check_files(paths[:1], reader="pil")
    assert decoded == paths[:1]
    for cache_file in cache_dir.glob("*.json"):
        cache_file.write_text("{not json")
    decoded.clear()
    assert image_check.check_files(paths)[0] == good and len(decoded) == 9
    # cache_dir=False: no cache read or written.
    decoded.clear()
    image_check.check_files(paths, cache_dir=False)
    assert len(decoded) == 9


def test_cache_location_and_progress_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(image_check.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert image_check.default_cache_dir() == str(tmp_path / "xdg" / "mobilenet_tf" / "image_check")
    _save(tmp_path / "a.png", _rgb(np.random.default_rng(0)), "PNG")
    image_check.check_files([str(tmp_path / "a.png")], progress=True)
    assert list((tmp_path / "xdg" / "mobilenet_tf" / "image_check").glob("*.json"))
    assert "image check (1 files)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`reader` must be one of"):
        image_check.check_files([], reader="opencv")


def test_facenet_identity_and_lfw_folders_skip_undecodable_files(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("Ann_Lee", 3), ("Bo_Chan", 2), ("Cy_Ode", 2)):
        for i in range(1, count + 1):
            _save(tmp_path / "faces" / name / f"{name}_{i:04d}.jpg", _rgb(rng, 50, 50), "JPEG")
    # The header check this replaces let a truncated JPEG through: it crashed training.
    truncated = tmp_path / "faces" / "Ann_Lee" / "Ann_Lee_0003.jpg"
    _truncated_jpeg(truncated, rng)
    with Image.open(truncated) as image:
        image.verify()  # PIL's header check passes it
    (tmp_path / "faces" / "Bo_Chan" / "Bo_Chan_0002.jpg").write_bytes(b"")  # Bo_Chan is left with 1 image

    split = face_data.folder_split(str(tmp_path / "faces"))
    assert split.names == ["Ann_Lee", "Cy_Ode"] and len(split) == 4
    assert split.skipped == {"identities_with_fewer_than_2_images": 1, "unreadable_files": 2}
    (ann, ann_reason), (bo, bo_reason) = split.check.unreadable
    assert ann == str(truncated) and TRUNCATED in ann_reason
    assert os.path.basename(bo) == "Bo_Chan_0002.jpg" and bo_reason == EMPTY
    images = np.concatenate(list(face_data.image_batches(split, 24, batch_size=8).as_numpy_iterator()))
    assert images.shape == (4, 24, 24, 3)
    with pytest.raises(ValueError, match=rf"--strict-data: {re.escape(str(truncated))}: {TRUNCATED}"):
        face_data.folder_split(str(tmp_path / "faces"), strict=True)
    unchecked = face_data.folder_split(str(tmp_path / "faces"), check_images=False)
    assert len(unchecked) == 7 and unchecked.check is None

    # LFW's folder is checked too (it was not); pairs.txt naming a skipped file says why.
    lfw = face_data.lfw_folder_split(str(tmp_path / "faces"))
    assert len(lfw) == 5 and lfw.num_identities == 3 and len(lfw.check.unreadable) == 2
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\t1\nAnn_Lee\t1\t3\nAnn_Lee\t1\tCy_Ode\t1\n")
    with pytest.raises(ValueError, match=rf"Ann_Lee_0003.jpg' is not in the LFW folder \(it is unreadable and was "
                                         rf"skipped: {TRUNCATED}"):
        face_data.read_pairs_file(str(pairs_txt), lfw)


def _segmentation_folders(root, rng):
    """3 good pairs, a zero-byte image, a truncated label PNG, an image without a label
    and a label without an image."""
    for i in range(5):
        _save(root / "img" / f"{i}.jpg", _rgb(rng, 32, 40), "JPEG")
        _save(root / "lbl" / f"{i}.png", rng.choice([0, 1, 255], (32, 40)).astype(np.uint8), "PNG")
    (root / "img" / "1.jpg").write_bytes(b"")
    data = (root / "lbl" / "3.png").read_bytes()
    (root / "lbl" / "3.png").write_bytes(data[: len(data) // 2])
    _save(root / "img" / "unlabelled.jpg", _rgb(rng, 32, 40), "JPEG")
    _save(root / "lbl" / "orphan.png", np.zeros((32, 40), np.uint8), "PNG")


def test_lraspp_folder_skips_unreadable_and_unpaired_files(tmp_path):
    _segmentation_folders(tmp_path, np.random.default_rng(0))
    images, labels = str(tmp_path / "img"), str(tmp_path / "lbl")
    split = seg_data.folder_split(images, labels, num_classes=2)
    assert split.num_examples == 3
    report = split.check
    assert [os.path.relpath(p, tmp_path) for p, _ in report.unreadable] == ["img/1.jpg", "lbl/3.png"]
    assert report.unreadable[0][1] == EMPTY and "truncated" in report.unreadable[1][1]
    assert [(os.path.relpath(p, tmp_path), r.split(":")[0]) for p, r in report.unpaired] == \
        [("img/unlabelled.jpg", "image without a label"), ("lbl/orphan.png", "label without an image")]
    assert report.summary("RUN/skipped_files.txt") == (
        "image check: 2 of 10 files unreadable, 1 image without a label, 1 label without an image, skipped; "
        "listed in RUN/skipped_files.txt")
    batches = seg_data.make_pipeline(split, training=False, batch_size=2)
    assert sum(len(x) for x, _ in batches.as_numpy_iterator()) == 3
    with pytest.raises(ValueError, match=rf"--strict-data: {re.escape(str(tmp_path / 'img' / '1.jpg'))}: empty"):
        seg_data.folder_split(images, labels, num_classes=2, strict=True)
    # Only unpaired files: strict still refuses (nothing is skipped silently under it).
    for name in ("img/1.jpg", "img/3.jpg", "lbl/1.png", "lbl/3.png"):
        (tmp_path / name).unlink()
    with pytest.raises(ValueError, match=r"unlabelled.jpg: image without a label: no unlabelled.png in"):
        seg_data.folder_split(images, labels, num_classes=2, strict=True)


@pytest.mark.parametrize("recipe, real", [("imagenet", "imagenet2012"), ("segmentation", "cityscapes")])
def test_data_dir_without_dataset_selects_the_real_dataset(recipe, real, tmp_path):
    module = load_recipe(recipe)
    assert module.resolve(module.Config()).dataset == "synthetic"
    assert module.resolve(module.Config(data_dir=str(tmp_path))).dataset == real
    assert module.resolve(module.Config(dataset=real, data_dir=str(tmp_path))).dataset == real
    with pytest.raises(ValueError, match=rf"`--data-dir` '{re.escape(str(tmp_path))}' selects a real TFDS dataset but "
                                         r"`--dataset synthetic` was given"):
        module.resolve(module.Config(dataset="synthetic", data_dir=str(tmp_path)))


def _recipe_folder(root):
    _class_folders(root)
    rng = np.random.default_rng(1)
    for label in ("cat", "dog"):  # enough good images for two batches of 8
        for i in range(6):
            _save(root / label / f"more_{i}.jpg", _rgb(rng, 36, 36), "JPEG")
    return root


RECIPE_TINY = ["--no-saved-model", "--model", "v1", "--alpha", "0.25", "--image-size", "32", "--epochs", "1",
               "--global-batch-size", "8", "--steps-per-epoch", "2", "--verbose", "2"]


@pytest.mark.slow(seconds=10)
def test_imagenet_recipe_skips_bad_files_and_lists_them(tmp_path, cache_dir):
    data = _recipe_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    proc = run_recipe_in_process("recipes/imagenet.py", "--dataset", "folder", "--train-dir", str(data),
                                 *RECIPE_TINY, "--output-dir", str(run_dir))  # cache_dir: set in the environment
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    listing = run_dir / image_check.SKIPPED_FILE
    assert f"image check: 3 of 21 files unreadable, skipped; listed in {listing}" in proc.stdout
    assert [line.split("\t")[0] for line in listing.read_text().splitlines()] == \
        [str(data / "cat" / "truncated.jpg"), str(data / "dog" / "text.jpg"), str(data / "dog" / "zero.jpg")]
    assert (run_dir / "metrics.json").exists()


def test_imagenet_recipe_strict_data_stops_before_the_run_directory(tmp_path, cache_dir):
    data = _recipe_folder(tmp_path / "data")
    proc = run_recipe_in_process("recipes/imagenet.py", "--dataset", "folder", "--train-dir", str(data),
                                 *RECIPE_TINY, "--strict-data", "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"imagenet.py: error: --strict-data: {data / 'cat' / 'truncated.jpg'}: {TRUNCATED}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
