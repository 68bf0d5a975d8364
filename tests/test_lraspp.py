"""LR-ASPP head, segmentation data, loss and metrics (issue 6)."""

import numpy as np
import pytest
import tensorflow as tf

import mobilenet_tf
from conftest import run
from mobilenet_tf._keras import keras
from mobilenet_tf.heads import lraspp
from mobilenet_tf.heads.lraspp import data, metrics

# V3 paper Table 7 (1024x2048, 19 classes, RF2, 128 filters): params, MAdds.
PAPER_TABLE_7 = {"v3_large": (1.51e6, 9.74e9), "v3_small": (0.47e6, 2.90e9)}


@pytest.mark.parametrize("backbone", sorted(PAPER_TABLE_7))
def test_size_at_cityscapes_resolution_is_near_table_7(backbone):
    model = lraspp.build_lraspp(backbone, num_classes=19, input_shape=(1024, 2048, 3))
    profile = mobilenet_tf.profile(model)
    paper_params, paper_madds = PAPER_TABLE_7[backbone]
    assert model.output_shape == (None, 1024, 2048, 19)
    assert abs(profile.madds / paper_madds - 1) < 0.05
    # Ours is 11-15% above the paper's parameter count (README: "LR-ASPP size").
    assert 1.0 < profile.conv_dense_params / paper_params < 1.2
    # The paper's pooling: kernel ceil(769 / 16) = 49, stride (4, 5) over the 64x128 map.
    assert model.get_layer("lraspp_pool").output.shape[1:3] == (4, 16)
    assert model.get_layer("lraspp_conv").input.shape[1:3] == (64, 128)  # output stride 16
    assert model.get_layer("lraspp_low_classifier").input.shape[1:3] == (128, 256)  # stride 8


def test_parameters_equal_torchvision_lraspp_mobilenet_v3_large():
    # torchvision's lraspp_mobilenet_v3_large (dilated, no reduced tail, global pooling, 21 classes) has
    # 3,221,538 parameters; BN moving statistics are buffers there, non-trainable weights here.
    model = lraspp.build_lraspp("v3_large", num_classes=21, reduced_tail=False, pooling="global",
                                input_shape=(None, None, 3))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 3_221_538


@pytest.mark.parametrize("backbone, output_stride, pooling, shape", [
    ("v3_small", 16, "paper", (64, 96)),
    ("v3_small", 32, "global", (96, 64)),
    ("v3_large", 16, "global", (64, 64)),
    ("v2", 16, "paper", (64, 64)),
])
def test_logits_have_the_input_size(backbone, output_stride, pooling, shape):
    model = lraspp.build_lraspp(backbone, num_classes=7, input_shape=(*shape, 3), output_stride=output_stride,
                                pooling=pooling, alpha=0.5)
    out = run(model, np.random.default_rng(0).uniform(0, 255, (2, *shape, 3)).astype("float32"))
    assert out.shape == (2, *shape, 7) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.std(out) > 0


@pytest.mark.slow(seconds=4)
def test_global_pooling_model_runs_at_any_size_and_saves(tmp_path):
    model = lraspp.build_lraspp("v3_small", num_classes=3, input_shape=(None, None, 3), pooling="global", alpha=0.5)
    for shape in ((64, 64), (96, 160)):
        assert run(model, np.zeros((1, *shape, 3), "float32")).shape == (1, *shape, 3)
    model.save(tmp_path / "seg.keras")
    restored = keras.models.load_model(tmp_path / "seg.keras")
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(run(restored, x), run(model, x), atol=1e-5)


def test_paper_pooling_slides_on_inputs_larger_than_the_training_crop():
    model = lraspp.build_lraspp("v3_small", num_classes=3, input_shape=(128, 256, 3), alpha=0.5,
                                pool_crop_size=(128, 128))
    assert model.get_layer("lraspp_pool").output.shape[1:3] == (1, 2)  # kernel 8, strides (4, 5) on 8x16
    assert model.get_layer("lraspp_scale_resize").output.shape[1:3] == (8, 16)
    assert run(model, np.zeros((1, 128, 256, 3), "float32")).shape == (1, 128, 256, 3)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of output_stride 16"):
        lraspp.build_lraspp("v3_small", input_shape=(100, 128, 3))
    with pytest.raises(ValueError, match="pooling='global'"):
        lraspp.build_lraspp("v3_small", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="`filters` must be one of"):
        lraspp.build_lraspp("v3_small", filters=64, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        lraspp.build_lraspp("v3_small", pooling="max", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="unknown model name"):
        lraspp.build_lraspp("v4", input_shape=(64, 64, 3))
    plain = mobilenet_tf.build("v3_small", include_top=False, input_shape=(64, 64, 3), alpha=0.5)
    with pytest.raises(ValueError, match="needs backbone endpoints 'C5' and 'C3'"):
        lraspp.build_lraspp(plain)


def test_a_keras_backbone_with_endpoints_is_accepted():
    backbone = mobilenet_tf.build("v3_small", include_top=False, input_shape=(64, 64, 3), alpha=0.5,
                                  return_endpoints=True, output_stride=16, reduced_tail=True)
    model = lraspp.build_lraspp(backbone, num_classes=4)
    assert run(model, np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 4)
    with pytest.raises(ValueError, match="pass the output_stride the backbone was built with"):
        lraspp.build_lraspp(backbone, num_classes=4, output_stride=32)


def test_cityscapes_label_ids_map_to_19_train_ids():
    mapped = data.map_cityscapes_labels(tf.range(256, dtype=tf.int32)).numpy()
    expected = np.full(256, 255)
    for label_id, train_id, _, _ in data.CITYSCAPES_CLASSES:
        expected[label_id] = train_id
    np.testing.assert_array_equal(mapped, expected)
    assert sorted(mapped[mapped != 255]) == list(range(19))
    assert mapped[7] == 0 and mapped[26] == 13 and mapped[33] == 18  # road, car, bicycle
    assert mapped[0] == mapped[6] == mapped[34] == 255  # unlabeled, ground, license plate (-1 as 255)


def test_ignore_label_loss_matches_numpy_and_is_normalised_by_labelled_pixels():
    labels = np.array([[[0, 1], [255, 2]], [[255, 255], [255, 1]]])[..., None]
    logits = np.random.default_rng(0).normal(size=(2, 2, 2, 3)).astype("float32")
    per_example = metrics.ignore_label_crossentropy(tf.constant(labels), tf.constant(logits)).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels[..., 0] != 255
    reference = -np.mean(np.take_along_axis(log_softmax, np.where(valid, labels[..., 0], 0)[..., None], -1)[valid])
    assert per_example.shape == (2,)
    np.testing.assert_allclose(per_example.mean(), reference, rtol=1e-6)
    # A batch with no labelled pixel: zero loss, zero (finite) gradient.
    ignored = tf.fill((1, 2, 2, 1), 255)
    variable = tf.Variable(logits[:1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(metrics.ignore_label_crossentropy(ignored, variable))
    assert float(loss) == 0.0 and np.all(tape.gradient(loss, variable).numpy() == 0)


def test_confusion_matrix_miou_matches_a_hand_computation():
    # 1 image, 2x3 pixels; truth / prediction (255 ignored):
    truth = np.array([[0, 0, 1], [1, 2, 255]])
    prediction = np.array([[0, 1, 1], [1, 1, 0]])
    logits = np.eye(3, dtype="float32")[prediction][None]
    dataset = tf.data.Dataset.from_tensors((logits, truth[None, ..., None]))
    matrix = metrics.ConfusionMatrix(lambda x, training: x, 3)(dataset)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    result = metrics.scores(matrix, ["a", "b", "c"])
    # IoU a = 1 / (2 + 1 - 1) = 1/2, b = 2 / (2 + 4 - 2) = 1/2, c = 0 / (1 + 0 - 0) = 0.
    assert result["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert result["miou"] == pytest.approx(1 / 3) and result["pixel_accuracy"] == pytest.approx(3 / 5)
    # A class absent from truth and prediction is left out of the mean.
    assert metrics.scores(np.diag([2, 0, 2]))["miou"] == 1.0
    keras_miou = metrics.mean_iou_metric(3)
    keras_miou.update_state(truth[None, ..., None], logits)
    assert float(keras_miou.result()) == pytest.approx(1 / 3)


def test_augmentation_keeps_labels_nearest_and_pads_with_ignore():
    image, label = next(iter(data.synthetic_split(True, 1, 64).dataset))
    values = set(np.unique(label.numpy()))
    crops = [data.random_scale_crop_flip(tf.cast(image, tf.float32), tf.cast(label, tf.int32), (96, 96),
                                         (0.5, 2.0), seed=s) for s in range(6)]
    for crop_image, crop_label in crops:
        assert crop_image.shape == (96, 96, 3) and crop_label.shape == (96, 96, 1)
        assert set(np.unique(crop_label.numpy())) <= values | {255}
    # 64 px at scale 1 does not fill 96 px: padding is the ignore label and the mean pixel.
    small_image, small_label = data.random_scale_crop_flip(tf.zeros((64, 64, 3)), tf.zeros((64, 64, 1), tf.int32),
                                                           (96, 96), (1.0, 1.0))
    assert np.all(small_label.numpy()[64:] == 255) and np.all(small_image.numpy()[64:] == data.MEAN_PIXEL)
    assert np.all((small_label.numpy()[:64] == 0).sum(axis=1) == 64)  # flipped or not, 64 labelled columns


@pytest.mark.slow(seconds=3)
def test_synthetic_scenes_are_reproducible_and_use_every_class():
    split = data.synthetic_split(True, 16, 64, num_classes=5)
    first = [(x.numpy(), y.numpy()) for x, y in split.dataset]
    again = [(x.numpy(), y.numpy()) for x, y in data.synthetic_split(True, 16, 64, num_classes=5).dataset]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    labels = np.stack([y for _, y in first])
    assert set(np.unique(labels)) == set(range(5))
    assert 0.4 < np.mean(labels == 0) < 0.95
    assert split.class_names[0] == "background" and len(split.class_names) == 5


def test_folder_dataset_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir(), (tmp_path / "lbl").mkdir()
    for i in range(3):
        tf.io.write_file(str(tmp_path / "img" / f"{i}.jpg"),
                         tf.io.encode_jpeg(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)))
        label = rng.choice([0, 1, 2, 255], (40, 48, 1)).astype(np.uint8)
        tf.io.write_file(str(tmp_path / "lbl" / f"{i}.png"), tf.io.encode_png(label))
    split = data.folder_split(str(tmp_path / "img"), str(tmp_path / "lbl"), num_classes=3)
    assert split.num_examples == 3
    images, labels = next(data.make_pipeline(split, training=True, batch_size=2, crop_size=(32, 32))
                          .as_numpy_iterator())
    assert images.shape == (2, 32, 32, 3) and labels.shape == (2, 32, 32, 1)
    with pytest.raises(ValueError, match=r"values \[2\].*\[0, 2\)"):
        data.folder_split(str(tmp_path / "img"), str(tmp_path / "lbl"), num_classes=2)
    tf.io.write_file(str(tmp_path / "lbl" / "1.png"), tf.io.encode_png(np.zeros((20, 48, 1), np.uint8)))
    with pytest.raises(ValueError, match="must be the same size"):
        data.folder_split(str(tmp_path / "img"), str(tmp_path / "lbl"), num_classes=3)
    with pytest.raises(ValueError, match="is not a directory"):
        data.folder_split(str(tmp_path / "missing"), str(tmp_path / "lbl"), num_classes=3)
    # 16-bit label PNGs are refused (decoding would rescale their values).
    tf.io.write_file(str(tmp_path / "lbl" / "1.png"), tf.io.encode_png(np.ones((40, 48, 1), np.uint16)))
    with pytest.raises(ValueError, match="'I;16' PNG"):
        data.folder_split(str(tmp_path / "img"), str(tmp_path / "lbl"), num_classes=3)


def test_palette_label_pngs_read_as_class_indices(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir(), (tmp_path / "lbl").mkdir()
    indices = np.array([[0, 1, 2, 255]] * 4, np.uint8).repeat(8, axis=0).repeat(8, axis=1)  # 32x32
    label = Image.fromarray(indices, mode="P")
    label.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)  # colours unlike the indices
    label.save(tmp_path / "lbl" / "a.png")
    tf.io.write_file(str(tmp_path / "img" / "a.png"), tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)))
    split = data.folder_split(str(tmp_path / "img"), str(tmp_path / "lbl"), num_classes=3)
    _, labels = next(data.make_pipeline(split, training=False, batch_size=1).as_numpy_iterator())
    np.testing.assert_array_equal(labels[0, ..., 0], indices)


def test_pipeline_rejects_label_values_out_of_range():
    bad = data.Split(tf.data.Dataset.from_tensors((tf.zeros((32, 32, 3), tf.uint8), tf.fill((32, 32, 1), 7))),
                     1, 5, [str(i) for i in range(5)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label values must be train ids in \[0, 5\)"):
        next(iter(data.make_pipeline(bad, training=False, batch_size=1)))


def test_cityscapes_loader_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE, data_dir=str(tmp_path)):
        split = data.cityscapes_split("validation", data_dir=str(tmp_path))
        images, labels = next(data.make_pipeline(split, training=True, batch_size=2, crop_size=(64, 128))
                              .as_numpy_iterator())
    assert split.num_classes == 19 and split.num_examples == 2 and split.class_names[0] == "road"
    assert images.shape == (2, 64, 128, 3) and labels.shape == (2, 64, 128, 1)
    assert set(np.unique(labels)) <= set(range(19)) | {255}


def test_cityscapes_without_manual_download_says_which_zips(tmp_path):
    with pytest.raises(ValueError, match=r"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip.*downloads.manual"):
        data.cityscapes_split("train", data_dir=str(tmp_path))
