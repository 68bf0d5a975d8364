import numpy as np
import pytest

import keras

from mobilenet_tf import export, op_profile

SUMMARY = """
============================== Summary by node type ==============================
                             [Node type]    [count]   [avg ms]    [avg %]    [cdf %]   [mem KB] [times called]
  Delegate/Convolution (NHWC, QC8) IGEMM          2      0.250    62.500%    62.500%      0.000            100
                  Delegate/Multiply (ND)          4      0.050    25.000%    87.500%      0.000            200
                         AVERAGE_POOL_2D          1      0.100    12.500%   100.000%      0.000             50

============================== Delegate Statistics ==============================
"""


def test_the_summary_by_node_type_is_read_kernel_by_kernel():
    rows = op_profile.parse_summary(SUMMARY)
    assert [(r.name, r.count) for r in rows] == [("Delegate/Convolution (NHWC, QC8) IGEMM", 2),
                                                 ("Delegate/Multiply (ND)", 4), ("AVERAGE_POOL_2D", 1)]
    assert [r.ms for r in rows] == pytest.approx([0.5, 0.2, 0.1]) and sum(r.share for r in rows) == pytest.approx(1)
    profile = op_profile.OpProfile("m.tflite", 2, 50, rows, SUMMARY)
    assert profile.ms == pytest.approx(0.8)
    assert profile.table(top=1).splitlines()[-1] == "| Delegate/Convolution (NHWC, QC8) IGEMM | 2 | 0.500 | 62.5% |"
    with pytest.raises(ValueError, match="no 'Summary by node type' rows"):
        op_profile.parse_summary("Timings (microseconds): count=0")


def test_fp32_and_int8_profiles_compare_operator_by_operator():
    """Kernels of one operator sum across precisions and variants; an operator only one
    file has gets a "-" cell and no ratio; the last row sums everything."""
    fp32 = op_profile.OpProfile("fp32.tflite", 2, 50, [
        op_profile.NodeType("Delegate/Convolution (NHWC, F32) IGEMM", 3, 0.6, 0.6),
        op_profile.NodeType("Delegate/Convolution (NHWC, F32) DWConv 2", 2, 0.4, 0.4)], "")
    int8 = op_profile.OpProfile("int8.tflite", 2, 50, [
        op_profile.NodeType("Delegate/Convolution (NHWC, QC8) IGEMM", 2, 0.2, 0.2),
        op_profile.NodeType("Delegate/Convolution (NHWC, F32) IGEMM", 1, 0.1, 0.1),  # the float stem
        op_profile.NodeType("Delegate/Convolution (NHWC, QC8) DWConv", 2, 0.5, 0.5),
        op_profile.NodeType("AVERAGE_POOL_2D", 1, 0.2, 0.2)], "")
    assert op_profile.operator("Delegate/Convolution (NHWC, QC8) DWConv 2") == "Convolution DWConv"
    assert op_profile.operator("Delegate/Average Pooling (NHWC, F32) Average Pooling") == "Average Pooling"
    assert op_profile.operator("Delegate/Mean (ND) Reduce2") == "Mean Reduce"
    assert op_profile.operator("ATAN2") == "ATAN2"  # a TFLite op keeps its name, digits too
    assert int8.by_operator()["Convolution IGEMM"] == (pytest.approx(0.3), 3)
    lines = op_profile.comparison_table(fp32, int8).splitlines()
    assert lines[2:] == ["| Convolution IGEMM | 0.600 (3) | 0.300 (3) | 0.50 |",
                         "| Convolution DWConv | 0.400 (2) | 0.500 (2) | 1.25 |",
                         "| AVERAGE_POOL_2D | - | 0.200 (1) | - |",
                         "| all | 1.000 | 1.000 | 1.00 |"]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        op_profile.op_profile(str(tmp_path / "missing.tflite"))
    not_a_model = tmp_path / "text.tflite"
    not_a_model.write_text("not a flatbuffer")
    with pytest.raises(ValueError, match="must be a TFLite model"):
        op_profile.op_profile(str(not_a_model))
    for flag, value in (("threads", 0), ("runs", 0), ("batch", 0), ("warmup", -1)):
        with pytest.raises(ValueError, match=f"`{flag}` must be an integer"):
            op_profile.op_profile(str(not_a_model), **{flag: value})


def test_a_small_model_profiles_op_by_op_at_the_batch_asked(tmp_path):
    """A conv + pooling + dense model: XNNPACK's nodes for each op, the batch run as asked
    (the dynamic batch dimension), shares that add up."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    path = export.to_tflite(model, str(tmp_path / "small.tflite"))
    one, many = (op_profile.op_profile(path, threads=1, runs=5, batch=b) for b in (1, 64))
    names = [k.name for k in one.by_type]
    assert any("Convolution" in n for n in names) and any("Fully Connected" in n for n in names)
    assert sum(k.share for k in one.by_type) == pytest.approx(1, abs=0.02)
    assert many.ms > one.ms and many.runs == 5 and "Run Order" in many.text
    assert np.isfinite([k.ms for k in many.by_type]).all()
