"""heads/facenet: losses vs NumPy, semi-hard mining by hand, the 10-fold protocol with a
known answer, P x K sampling, folder / LFW data, pairs, gallery, model, TFLite."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import randomize_batchnorm, run_legacy_keras
from mobilenet_tf import export, profile
from mobilenet_tf.heads import facenet
from mobilenet_tf.heads.facenet import data, losses, verification

# ---------------------------------------------------------------- losses


def numpy_triplet(labels, embeddings, margin, mining):
    """Per-anchor triplet loss by loops (squared distances)."""
    d = ((embeddings[:, None] - embeddings[None]) ** 2).sum(-1)
    n = len(labels)
    out = np.zeros(n)
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            out[a] = max(max(d[a, pos]) - min(d[a, neg]) + margin, 0)
            continue
        values = []
        for p in pos:
            farther = [d[a, q] for q in neg if d[a, q] > d[a, p]]
            chosen = min(farther) if farther else max(d[a, neg])
            values.append(max(d[a, p] - chosen + margin, 0))
        out[a] = np.mean(values)
    return out


@pytest.mark.parametrize("mining", losses.MINING)
def test_triplet_losses_match_numpy(mining):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 24)
    embeddings = rng.normal(size=(24, 8)).astype("float32")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    got = losses.TRIPLET_LOSSES[mining](tf.constant(labels), tf.constant(embeddings), 0.2).numpy()
    np.testing.assert_allclose(got, numpy_triplet(labels, embeddings.astype(np.float64), 0.2, mining), atol=1e-5)
    assert got.max() > 0  # random embeddings violate the margin


def test_semi_hard_mining_on_a_hand_made_batch():
    # 1-D points: identity 0 at 0.0 and 0.3, identity 1 at 0.4 and -0.8 (squared distances by hand).
    labels = tf.constant([0, 0, 1, 1])
    embeddings = tf.constant([[0.0], [0.3], [0.4], [-0.8]])
    # anchor 0: d_ap .09, semi-hard negative .16 (closest farther one)  -> .09 - .16 + .2 = .13
    # anchor 1: d_ap .09, negatives .01 and 1.21: only 1.21 is farther -> 0
    # anchor 2: d_ap 1.44, no negative farther: the farthest, .16       -> 1.48
    # anchor 3: d_ap 1.44, no negative farther: the farthest, 1.21      -> .43
    np.testing.assert_allclose(losses.semi_hard_triplet_loss(labels, embeddings).numpy(), [0.13, 0.0, 1.48, 0.43],
                               atol=1e-6)
    # batch-hard: hardest negatives .16, .01, .01, .64
    np.testing.assert_allclose(losses.batch_hard_triplet_loss(labels, embeddings).numpy(), [0.13, 0.28, 1.63, 1.0],
                               atol=1e-6)


def test_batch_of_one_identity_costs_nothing():
    # No negative to compare with: no triplet (not a loss blown up by the masking constant).
    same = tf.constant([3, 3, 3])
    for fn in losses.TRIPLET_LOSSES.values():
        assert np.all(fn(same, tf.constant([[0.0], [0.5], [1.0]])).numpy() == 0)
    with pytest.raises(ValueError, match="pack_targets"):
        losses.FaceNetLoss(distill_weight=1.0)(losses.pack_targets([0, 1]), tf.zeros((2, 4)))


def test_anchor_without_positive_costs_nothing():
    got = losses.semi_hard_triplet_loss(tf.constant([0, 1, 1]), tf.constant([[0.0], [0.3], [0.5]])).numpy()
    assert got[0] == 0 and got[1] == pytest.approx(0.04 - 0.09 + 0.2)


def test_distillation_and_combined_loss():
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(losses.distillation_loss(teacher, student).numpy(), ((student - teacher) ** 2).sum(1),
                               rtol=1e-5)
    y_true = losses.pack_targets(labels, teacher)
    assert y_true.shape == (6, 5)
    combined = losses.FaceNetLoss(triplet_weight=0.5, distill_weight=2.0)
    expected = 0.5 * numpy_triplet(labels, student, 0.2, "semi_hard") + 2.0 * ((student - teacher) ** 2).sum(1)
    np.testing.assert_allclose(combined.call(y_true, student).numpy(), expected, rtol=1e-5)
    assert np.isclose(float(combined(y_true, student)), expected.mean(), rtol=1e-5)
    restored = losses.FaceNetLoss.from_config(combined.get_config())
    assert (restored.triplet_weight, restored.distill_weight, restored.mining) == (0.5, 2.0, "semi_hard")
    for kwargs in (dict(mining="hardest"), dict(margin=-1), dict(triplet_weight=0, distill_weight=0)):
        with pytest.raises(ValueError):
            losses.FaceNetLoss(**kwargs)


# ---------------------------------------------------------------- verification


def test_ten_fold_protocol_known_answer():
    rng = np.random.default_rng(0)
    distances, same, fold = [], [], []
    for k in range(10):
        positives = rng.uniform(0.0, 1.0, 30)
        if k < 5:
            positives[0] = 2.5  # one same-person pair farther than every different-person pair
        distances += [*positives, *rng.uniform(2.0, 3.0, 30)]
        same += [True] * 30 + [False] * 30
        fold += [k] * 60
    results = verification.evaluate_distances(np.array(distances), np.array(same), np.array(fold))
    # Any threshold in (1, 2) is best; the five outliers are the only errors.
    assert results["accuracy"] == pytest.approx(1 - 5 / 600)
    assert 1.0 < results["threshold"] < 2.0
    # FAR 1e-3 of 270 negatives allows none: threshold = the smallest negative; outliers rejected.
    assert results["val_at_far_1e-3"] == pytest.approx(1 - 5 / 300)
    distances, same, fold = np.array(distances), np.array(same), np.array(fold)
    negatives = ~same
    below = [np.mean(distances[(fold == k) & negatives] < distances[(fold != k) & negatives].min()) for k in range(10)]
    assert results["far_at_far_1e-3"] == pytest.approx(np.mean(below))
    fpr, tpr, auc = verification.roc_curve(distances, same)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    # AUC: each outlier ranks below the negatives under 2.5 (half of them).
    assert auc == pytest.approx(1 - 5 / 300 * np.mean(distances[negatives] < 2.5))


def test_thresholds():
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    same = np.array([True, True, False, True, False, False])
    t = verification.best_threshold(d, same)
    assert np.mean((d < t) == same) == pytest.approx(5 / 6)
    assert verification.far_threshold(d, same, 0.0) == 0.3  # accepts no negative
    assert verification.far_threshold(d, same, 0.34) == 0.5  # one of three negatives
    with pytest.raises(ValueError, match="2 folds"):
        verification.evaluate_distances(d, same, np.zeros(6))


# ---------------------------------------------------------------- data


def test_identity_batches_are_p_by_k_blocks():
    split = data.synthetic_split(12, 5, 32, training=True)
    index_column = np.arange(len(split), dtype="float32")[:, None]  # the "teacher" returns each image's index
    ds = data.identity_batches(split, 4, 3, 32, teacher_embeddings=index_column, seed=3)
    batches = list(ds.take(3).as_numpy_iterator())
    for images, targets in batches:
        assert images.shape == (12, 32, 32, 3) and images.dtype == np.float32
        assert 0 <= images.min() and images.max() <= 255
        labels, indices = targets[:, 0].astype(int), targets[:, 1].astype(int)
        np.testing.assert_array_equal(labels, split.labels[indices])
        blocks = labels.reshape(4, 3)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == 4  # P distinct identities
        assert all(len(set(row)) == 3 for row in indices.reshape(4, 3))  # K distinct images
    again = list(data.identity_batches(split, 4, 3, 32, teacher_embeddings=index_column, seed=3)
                 .take(3).as_numpy_iterator())
    assert all((a[1] == b[1]).all() for a, b in zip(batches, again))  # same seed, same draws
    assert not (batches[0][1] == batches[1][1]).all()


def test_identity_batch_limits():
    split = data.array_split(np.zeros((7, 8, 8, 3), np.uint8), [0, 0, 0, 1, 1, 2, 2], ["ann", "bo", "cy"])
    with pytest.raises(ValueError, match="'bo' has only 2 images"):
        data.check_identity_batch(split, 2, 3)
    with pytest.raises(ValueError, match=r"identities_per_batch.*\[2, 3\]"):
        data.check_identity_batch(split, 4, 2)
    with pytest.raises(ValueError, match="RGB"):
        data.array_split(np.zeros((2, 8, 8, 1), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="uint8"):
        data.array_split(np.zeros((2, 8, 8, 3), np.float32), [0, 1])


def _write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def test_folder_split_skips_and_counts_and_normalises_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noqa: E731
    _write(tmp_path / "ann" / "1.jpg", rgb(40, 30))
    _write(tmp_path / "ann" / "2.png", rng.integers(0, 255, (20, 20), dtype=np.uint8))  # grayscale
    _write(tmp_path / "bo" / "1.png", rng.integers(0, 255, (50, 50, 4), dtype=np.uint8))  # RGBA
    _write(tmp_path / "bo" / "2.jpg", rgb(64, 64))
    (tmp_path / "bo" / "3.jpg").write_bytes(b"not an image")  # corrupt
    _write(tmp_path / "cy" / "only.jpg", rgb(32, 32))  # one image: no positive pair possible
    (tmp_path / "empty_identity").mkdir()
    (tmp_path / "notes.txt").write_text("ignored")
    split = data.folder_split(str(tmp_path))
    assert split.names == ["ann", "bo"] and len(split) == 4
    assert split.skipped == {"identities_with_fewer_than_2_images": 2, "unreadable_files": 1}
    images = np.concatenate(list(data.image_batches(split, 24, batch_size=3).as_numpy_iterator()))
    assert images.shape == (4, 24, 24, 3)
    gray = images[1]
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])
    with pytest.raises(ValueError, match="does not exist"):
        data.folder_split(str(tmp_path / "missing"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="at least 2 identity"):
        data.folder_split(str(tmp_path / "nothing"))


def test_make_pairs_follows_the_lfw_protocol():
    split = data.synthetic_split(60, 10, 32, training=False)
    pairs = data.make_pairs(split, num_folds=10, pairs_per_fold=100, seed=0)
    assert len(pairs.same) == 10 * 200 and pairs.num_folds == 10
    assert np.array_equal(split.labels[pairs.first] == split.labels[pairs.second], pairs.same)
    for k in range(10):
        in_fold = pairs.fold == k
        assert pairs.same[in_fold].sum() == 100 and (~pairs.same[in_fold]).sum() == 100
        people = set(split.labels[pairs.first[in_fold]]) | set(split.labels[pairs.second[in_fold]])
        others = set(split.labels[pairs.first[~in_fold]]) | set(split.labels[pairs.second[~in_fold]])
        assert not people & others  # no identity in two folds
    keys = set(zip(pairs.first, pairs.second))
    assert len(keys) == len(pairs.same)  # distinct pairs
    again = data.make_pairs(split, num_folds=10, pairs_per_fold=100, seed=0)
    assert np.array_equal(again.first, pairs.first) and np.array_equal(again.second, pairs.second)
    with pytest.raises(ValueError, match="identities"):
        data.make_pairs(data.synthetic_split(5, 2, 32), num_folds=10)


def _fake_lfw(root, people=(("Ann_Lee", 3), ("Bo_Chan", 2), ("Cy_Ode", 1))):
    rng = np.random.default_rng(0)
    for name, count in people:
        for i in range(1, count + 1):
            _write(root / name / f"{name}_{i:04d}.jpg", rng.integers(0, 255, (50, 50, 3), dtype=np.uint8), "JPEG")
    return root


def test_read_official_pairs_file(tmp_path):
    split = data.lfw_folder_split(str(_fake_lfw(tmp_path / "lfw")))
    assert split.num_identities == 3 and len(split) == 6  # single-image identities kept for pairs.txt
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("2\t1\nAnn_Lee\t1\t3\nAnn_Lee\t2\tCy_Ode\t1\nBo_Chan\t1\t2\nBo_Chan\t2\tAnn_Lee\t3\n")
    pairs = data.read_pairs_file(str(pairs_txt), split)
    files = [split.files[i] for i in pairs.first], [split.files[i] for i in pairs.second]
    assert files[0] == ["Ann_Lee/Ann_Lee_0001.jpg", "Ann_Lee/Ann_Lee_0002.jpg", "Bo_Chan/Bo_Chan_0001.jpg",
                        "Bo_Chan/Bo_Chan_0002.jpg"]
    assert files[1][1] == "Cy_Ode/Cy_Ode_0001.jpg"
    assert pairs.same.tolist() == [True, False, True, False] and pairs.fold.tolist() == [0, 0, 1, 1]
    pairs_txt.write_text("1\t1\nAnn_Lee\t1\t9\nAnn_Lee\t1\tBo_Chan\t1\n")
    with pytest.raises(ValueError, match="Ann_Lee_0009.jpg.*not in the LFW folder"):
        data.read_pairs_file(str(pairs_txt), split)
    pairs_txt.write_text("1\t1\nAnn_Lee\t1\n")
    with pytest.raises(ValueError, match="announces"):
        data.read_pairs_file(str(pairs_txt), split)


def test_pairs_file_errors_name_the_real_line(tmp_path):
    """Line numbers count blank lines; a non-integer image number and a pair in the
    wrong block of its fold (300 matched, then 300 mismatched) are refused."""
    split = data.lfw_folder_split(str(_fake_lfw(tmp_path / "lfw")))
    pairs_txt = tmp_path / "pairs.txt"
    cases = [
        ("2\t1\n\nAnn_Lee\t1\t3\n\nAnn_Lee\t2\tCy_Ode\t1\nBo_Chan\t1\t9\nBo_Chan\t2\tAnn_Lee\t3\n",
         r"line 6: image 'Bo_Chan/Bo_Chan_0009.jpg' is not in the LFW folder"),
        ("2\t1\nAnn_Lee\t1\t3\nAnn_Lee\t2\tCy_Ode\t1\nBo_Chan\tone\t2\nBo_Chan\t2\tAnn_Lee\t3\n",
         r"line 4: image number 'one' of 'Bo_Chan' is not an integer"),
        # Fold 1's matched block holds a mismatched line (the matched one comes second).
        ("1\t2\nAnn_Lee\t1\t3\nAnn_Lee\t2\tCy_Ode\t1\nBo_Chan\t1\t2\nBo_Chan\t2\tAnn_Lee\t3\n",
         r"line 3: fold 1 expects a matched \('name i j'\) pair here"),
        ("1\t1\nAnn_Lee\t2\tCy_Ode\t1\nAnn_Lee\t1\t3\n", r"line 2: fold 1 expects a matched"),
        ("1\t1\nAnn_Lee\t1\t3\nAnn_Lee\t1\t2\n", r"line 3: fold 1 expects a mismatched"),
        ("\n\nten\t300\n", r"line 3: the first line must be"),
    ]
    for text, message in cases:
        pairs_txt.write_text(text)
        with pytest.raises(ValueError, match=message):
            data.read_pairs_file(str(pairs_txt), split)


def test_lfw_from_tfds_mock_data():
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    names = [f"Person_{i % 25}" for i in range(100)]
    encoded = [tf.io.encode_jpeg(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)).numpy() for _ in names]

    def as_dataset(*args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"image": encoded, "label": names})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        split = data.lfw_split(data_dir=None, download=False)
    assert split.kind == "bytes" and split.num_identities == 25 and len(split) == 100
    assert split.names == sorted(set(names)) and np.all(np.diff(split.labels) >= 0)
    pairs = data.make_pairs(split, num_folds=10, pairs_per_fold=5)
    assert len(pairs.same) == 100 and pairs.same.sum() == 50
    images = next(iter(data.image_batches(split, 40, batch_size=4)))
    # LFW's fixed centre crop (150 of 250 pixels), resized to the input.
    expected = tf.image.resize(tf.cast(tf.io.decode_jpeg(split.sources[0]), tf.float32)[50:200, 50:200], (40, 40),
                               antialias=True)
    np.testing.assert_allclose(images[0], expected, atol=1e-3)


# ---------------------------------------------------------------- model, gallery, export


def test_embedding_model_outputs_unit_vectors_and_rejects_bad_arguments(images):
    model = facenet.build_embedding_model("v3_small", alpha=0.5, input_size=64, embedding_dim=32)
    embeddings = model(images(3, 64, 0, 255), training=False).numpy()
    assert embeddings.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="input_size"):
        facenet.build_embedding_model("v1", input_size=16)
    with pytest.raises(ValueError, match="embedding_dim"):
        facenet.build_embedding_model("v1", embedding_dim=0)
    with pytest.raises(ValueError, match="unknown model name"):
        facenet.build_embedding_model("v9")


@pytest.mark.slow(seconds=12)
def test_keras_applications_teacher():
    teacher = facenet.build_teacher("inception_resnet_v2", input_size=75, embedding_dim=16)
    out = teacher(np.full((1, 75, 75, 3), 128.0, np.float32), training=False).numpy()
    assert out.shape == (1, 16) and np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="too small"):
        facenet.build_teacher("inception_resnet_v2", input_size=64)


# V1 Table 14's student rows (MMAdds); the third row is printed "0.75 MobileNet-128" but its
# MAdds are those of 0.75 at 160 (the fourth row is 0.75 at 128), see README.
TABLE_14 = [(1.0, 160, 286), (1.0, 128, 185), (0.75, 160, 166), (0.75, 128, 108)]


@pytest.mark.parametrize("alpha,size,paper_madds", TABLE_14)
def test_table_14_students_multiply_adds(alpha, size, paper_madds):
    model = facenet.build_embedding_model("v1", alpha=alpha, input_size=size, embedding_dim=128)
    assert profile(model).madds / 1e6 == pytest.approx(paper_madds, rel=0.05)


def test_gallery_search_and_unknown(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    faces = np.concatenate([c + 0.05 * rng.normal(size=(2, 16)) for c in centres])
    gallery = facenet.Gallery().add(["ann", "ann", "bo", "bo", "cy", "cy"], faces)
    probes = np.stack([centres[1] + 0.05 * rng.normal(size=16), rng.normal(size=16)])
    top = gallery.query(probes, k=3)
    assert top[0][0][0] == "bo" and top[0][0][1] > 0.95 and len(top[0]) == 3
    assert len({name for name, _ in top[0]}) == 3  # identities, not faces
    assert gallery.identify(probes, threshold=0.9) == ["bo", facenet.gallery.UNKNOWN]
    gallery.save(tmp_path / "g.npz")
    restored = facenet.Gallery.load(tmp_path / "g.npz")
    assert restored.names == gallery.names and restored.query(probes, k=1) == gallery.query(probes, k=1)
    with pytest.raises(ValueError, match="2 names for 1"):
        gallery.add(["x", "y"], faces[:1])
    with pytest.raises(ValueError, match="Gallery\\(model\\)"):
        gallery.add(["x"], np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="empty"):
        facenet.Gallery().query(probes)


@pytest.mark.slow(seconds=4)
def test_gallery_with_a_model_and_verify_on_image_pairs(images):
    model = facenet.build_embedding_model("v1", alpha=0.25, input_size=32, embedding_dim=8)
    faces = images(4, 32, 0, 255)
    gallery = facenet.Gallery(model).add(["a", "b", "c", "d"], faces)
    assert [top[0][0] for top in gallery.query(faces, k=1)] == ["a", "b", "c", "d"]
    same = np.array([True, False] * 10)
    results = facenet.verify(model, (np.repeat(faces[:1], 20, 0), np.repeat(faces[1:2], 20, 0), same))
    assert results["num_pairs"] == 20 and results["roc"][0].shape == (21,)


@pytest.mark.slow(seconds=9)
def test_tflite_student_matches_keras(tmp_path, images):
    model = facenet.build_embedding_model("v1", alpha=0.5, input_size=64, embedding_dim=128)
    randomize_batchnorm(model)  # an untrained V1's features are ~0: nothing to normalise
    faces = images(4, 64, 0, 255)
    path = export.to_tflite(model, str(tmp_path / "student.tflite"))
    student = export.TFLiteModel(path)
    tflite = student(faces)
    keras_out = model(faces, training=False).numpy()
    assert np.abs(tflite - keras_out).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(tflite, axis=1), 1.0, atol=1e-5)
    # Only the normalisation's divisor guard runs outside XNNPACK (ones_like's SHAPE and
    # BROADCAST_TO did too): two partitions.
    assert student.op_counts()["DELEGATE"] == 2 and student.ops_outside_delegate() == {"GREATER": 1, "SELECT_V2": 1}


@pytest.mark.slow(seconds=15)
def test_student_builds_under_tf_keras():
    result = run_legacy_keras(
        "import json, numpy as np\n"
        "from mobilenet_tf._keras import keras\n"
        "from mobilenet_tf.heads import facenet\n"
        "m = facenet.build_embedding_model('v3_small', alpha=0.5, input_size=64)\n"
        "rng = np.random.default_rng(0)\n"
        "for layer in m.layers:  # an untrained model's features are ~0: give BN some statistics\n"
        "    if type(layer).__name__ == 'BatchNormalization':\n"
        "        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype('float32') for w in layer.get_weights()])\n"
        "faces = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype('float32')\n"
        "out = m(faces, training=False).numpy()\n"
        "print('RESULT' + json.dumps({'module': type(m).__module__, 'shape': list(out.shape),\n"
        "      'norm': float(np.linalg.norm(out[0]))}))\n")
    assert result["module"].startswith("tf_keras") and result["shape"] == [2, 128]
    assert abs(result["norm"] - 1.0) < 1e-5
