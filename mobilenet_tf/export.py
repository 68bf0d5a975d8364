"""On-device export: TFLite (fp32, float16, dynamic-range, full-integer int8).

Always converted through a SavedModel (``save_function``: the serving function and
the model's variables, for Keras 3 and tf_keras models alike) and
``tf.lite.TFLiteConverter.from_saved_model``: on this project's 2-core CPU the same
V3-Small converted from concrete functions ran about 20x slower. Float files are
converted with h-swish fused (``fuse_hard_swish``); int8 files with its 1/6 moved into
the next kernels (``fold_hard_swish_scale``), the RGB stem in float
(``thin_input_ops``) and the ops XNNPACK has no int8 kernel for in float
(``FLOAT_IN_INT8``). Files run on the LiteRT interpreter where installed
(``TFLiteModel``); ``op_profile`` shows where their time goes.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from mobilenet_tf import blocks, walkers

# The quantization vocabulary, defined once: every flag, backend name and argument
# that picks a TFLite quantization uses these names (see ``quantization_name``).
#   fp32     float32 weights and activations
#   float16  float16 weights (dequantized at load), float32 activations
#   dynamic  int8 weights, float activations (dynamic-range)
#   int8     full-integer kernels calibrated on representative data, float32 input and output
#   qat      int8 from a quantization-aware model's learned ranges (``compress.quantize_aware``)
QUANTIZATIONS = ("fp32", "float16", "dynamic", "int8", "qat")
# What users typed before the vocabulary was one; each still means its name.
ALIASES = {None: "fp32", "none": "fp32", "float32": "fp32", "fp16": "float16"}
# The post-training formats a model converts to on its own: the recipes' ``--tflite``
# names, the CLI's ``--quantize`` (besides the aliases) and the bench backends.
# The value is the legacy ``to_tflite`` spelling (None for fp32), kept for old callers.
FORMATS = {name: (None if name == "fp32" else name) for name in QUANTIZATIONS if name != "qat"}


def quantization_name(name, allowed=QUANTIZATIONS, what="quantization"):
    """The vocabulary's name of ``name`` (an alias such as None / "none" / "fp16" is
    resolved); ``ValueError`` naming ``what`` and the ``allowed`` names otherwise."""
    canonical = ALIASES.get(name, name) if name is None or isinstance(name, str) else name
    if canonical not in allowed:
        raise ValueError(f"`{what}` must be one of {list(allowed)}; got {name!r}.")
    return canonical


def parse_formats(flag, allowed=tuple(FORMATS)):
    """A recipe's ``--tflite`` value, "fp32,int8" -> ["fp32", "int8"]; ``ValueError``
    naming the flag and the allowed formats for anything else."""
    formats = [f for f in flag.split(",") if f]
    unknown = [f for f in formats if f not in allowed]
    if unknown:
        raise ValueError(f"`--tflite` formats must be among {list(allowed)}; got {unknown}.")
    return formats


def to_tflite(model, path, quantization=None, representative_data=None, calibration_steps=100):
    """Convert a Keras model to a ``.tflite`` file; returns ``path``.

    Args:
        model: a ``keras.Model`` (Keras 3 or tf_keras).
        path: output file.
        quantization: a name of ``QUANTIZATIONS``: "fp32" (also None, "none"),
            "float16" (fp16 weights), "dynamic" (int8 weights, float
            activations) or "int8" (full-integer kernels calibrated on
            ``representative_data``; float32 input and output) or "qat" (a
            quantization-aware model from ``compress.quantize_aware``: int8 from
            the ranges its fake-quant nodes learned, no calibration).
        representative_data: for "int8": an iterable of input batches (numpy or
            tensors of the model's input shape), e.g. a ``tf.data`` of images.
        calibration_steps: at most this many batches are used for calibration.

    A model with dilated convolutions and a known input size converts at a fixed
    batch of 1 (``has_dilated_convolutions``); any other at any batch size.
    """
    quantization = quantization_name(quantization)
    if quantization == "int8" and representative_data is None:
        raise ValueError("`quantization='int8'` needs `representative_data` (input batches) to calibrate "
                         "activation ranges.")
    with tempfile.TemporaryDirectory() as saved_model:
        static_size = None not in tuple(model.input_shape[1:3])
        batch = 1 if static_size and has_dilated_convolutions(model) else None
        if _is_keras3(model) and quantization in FLOAT_ACTIVATIONS:
            model = fuse_hard_swish(model)
        elif _is_keras3(model) and quantization == "int8":
            model = fold_hard_swish_scale(model)
        save_inference(model, saved_model, batch=batch)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if quantization != "fp32":  # "qat": DEFAULT alone turns fake-quant ranges into int8
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = calibration_generator(representative_data, calibration_steps)
            return write_file(path, int8_keeping_float(converter))
        return write_file(path, converter.convert())


# XNNPACK has no int8 kernel for a matmul of two activations, softmax or GELU: in an int8
# file they leave the delegate for TFLite's own kernels (MobileNetV4 Hybrid-M: 11 XNNPACK
# partitions, Hybrid-L 51; a classifier's final softmax: 2, the DEQUANTIZE after it is a
# partition of its own). In float they stay on XNNPACK, which runs the DEQUANTIZE /
# QUANTIZE around them too (1 partition). Nor for a ReLU that no conv or add before it
# absorbs (Xception's pre-activation ReLUs after each residual add: 12 partitions, 2.4x
# slower) or the element-wise ops of FaceNet's L2 normalisation (ABS, MAXIMUM, DIV,
# RSQRT). Nor for AVERAGE_POOL_2D, but the quantizer keeps that int8 whatever the deny
# list says (LR-ASPP's pooling branch, ShuffleNet V1's stride-2 shortcuts).
FLOAT_IN_INT8 = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RELU", "ABS", "MAXIMUM", "DIV", "RSQRT")


# An int8 convolution over this few input channels (the stem's 3x3 over RGB) is XNNPACK's
# slowest int8 kernel per MAdd: TFLite's op profiler (``op_profile``) timed V3-Small's
# stem at 0.43 ms in int8 and 0.08 ms in fp32, 22% of its int8 file. Kept in float, with
# the input scaling before it, every int8 file got faster (2 threads, one run: V1 2.09 ->
# 1.82 ms, V2 2.47 -> 2.27, V3-Large 3.23 -> 3.03, V3-Small 1.99 -> 1.33 profiled, V4
# Conv-S 1.50 -> 1.31, SqueezeNet 1.0 4.33 -> 3.80, ShuffleNet V2 1.90 -> 1.81).
THIN_INPUT_CHANNELS = 4


def bare_interpreter(flatbuffer):
    """A ``tf.lite.Interpreter`` of ``flatbuffer`` without XNNPACK, to read its ops and
    tensors as converted (a calibrated model's, too)."""
    return tf.lite.Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def thin_input_ops(flatbuffer, max_channels=THIN_INPUT_CHANNELS):
    """Names of the tensors written by the ops that read the model's input while it has
    at most ``max_channels`` channels, in a TFLite ``flatbuffer``: the input scaling and
    the stem convolution(s) over RGB, which ``int8_keeping_float`` keeps in float."""
    interpreter = bare_interpreter(flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def thin(index):
        shape = tensors[index]["shape"]
        return len(shape) == 4 and shape[-1] <= max_channels

    reached = {d["index"] for d in interpreter.get_input_details() if thin(d["index"])}
    names = []
    for op in interpreter._get_ops_details():  # in execution order
        if op["inputs"].size and op["inputs"][0] in reached:
            names += [tensors[index]["name"] for index in op["outputs"]]
            reached.update(index for index in op["outputs"] if thin(index))
    return sorted(names)


def int8_keeping_float(converter, denylisted_ops=FLOAT_IN_INT8, denylisted_nodes=()):
    """The int8 flatbuffer of ``converter`` (optimizations and representative dataset
    set) with the ops of the types ``denylisted_ops``, the ops writing the tensors
    named ``denylisted_nodes`` and the ops on the thin RGB input
    (``thin_input_ops``) kept in float: TFLite's selective quantization.

    The converter calibrates once (its calibrate-only mode), then TFLite's quantizer
    (``mlir_quantize``) turns the calibrated float flatbuffer into int8 with the deny
    lists, once more if XNNPACK refuses quantized ops (``refused_by_xnnpack``). These
    are the calls ``tf.lite.experimental.QuantizationDebugger`` makes, without the
    numeric-verify model it quantizes again on every change of its options (MobileNetV4
    Hybrid-L at 64 px: 25 -> 17 s, the same bytes).

    ``denylisted_nodes``: tensor names, or a function of the calibrated float
    flatbuffer that returns them (names the converter gives are known only after a
    conversion; the calibration's is reused instead of converting once more)."""
    from tensorflow.lite.python import convert as tflite_convert  # the quantizer QuantizationDebugger calls

    if not converter.optimizations or not converter.representative_dataset:
        raise ValueError("int8_keeping_float needs a converter with `optimizations` and a `representative_dataset` "
                         "set (the calibration batches).")
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # as QuantizationDebugger sets it
    calibrated = converter.convert()

    def quantized(nodes):
        return tflite_convert.mlir_quantize(
            calibrated, disable_per_channel=converter._experimental_disable_per_channel, fully_quantize=False,
            enable_numeric_verify=False, denylisted_ops=list(denylisted_ops), denylisted_nodes=list(nodes))

    named = [*(denylisted_nodes(calibrated) if callable(denylisted_nodes) else denylisted_nodes),
             *thin_input_ops(calibrated)]
    flatbuffer = quantized(named)
    refused = refused_by_xnnpack(flatbuffer)
    return quantized([*named, *refused]) if refused else flatbuffer


def refused_by_xnnpack(flatbuffer):
    """Names of the tensors written by the ops XNNPACK refuses in an int8 ``flatbuffer``
    (which then run on TFLite's kernels, splitting the graph): ``int8_keeping_float``
    quantizes once more with them in float, where XNNPACK runs them. XNNPACK refuses, for
    instance, an int8 ADD whose input and output scales differ by more than about 2^10
    (a residual branch far smaller than the sum), which a calibration can give: SSDLite
    V3-Large's network file (random weights, BN statistics from 4 images) had 5-7 ADDs
    outside XNNPACK and 9 partitions. Only quantized ops count (float ones outside, such
    as a detector's postprocess, have nothing to gain), and not AVERAGE_POOL_2D, which
    the quantizer keeps in int8 whatever the list says."""
    interpreter = TFLiteModel(flatbuffer)
    tensors = {t["index"]: t for t in interpreter.interpreter.get_tensor_details()}
    return sorted(tensors[index]["name"] for op in interpreter.outside_ops() if op["op_name"] != "AVERAGE_POOL_2D"
                  for index in op["outputs"] if tensors[index]["dtype"] in (np.int8, np.uint8, np.int16))


FLOAT_ACTIVATIONS = ("fp32", "float16", "dynamic")  # files whose activations stay float


def has_dilated_convolutions(model):
    """Whether a convolution of ``model`` (nested models included) is dilated.

    TensorFlow runs a dilated convolution as SPACE_TO_BATCH_ND -> convolution ->
    BATCH_TO_SPACE_ND, which XNNPACK does not run: each one split a segmentation
    file into two more XNNPACK partitions, with its BatchNormalization left
    unfolded. The converter folds the three back into one dilated CONV_2D /
    DEPTHWISE_CONV_2D (and the BatchNormalization into it) only when every shape
    is static, so ``to_tflite`` converts such models at a fixed batch of 1 (when their
    height and width are known); the file still runs other batch sizes
    (``TFLiteModel`` resizes its input). Layers wrapped by TFMOT (pruning,
    quantization-aware training) are looked into."""
    def dilation(layer):
        layer = getattr(layer, "layer", layer)  # a TFMOT wrapper's layer
        return max(getattr(layer, "dilation_rate", None) or (1,))

    return any(dilation(layer) > 1 for layer in walkers.flat_layers(model))


def fuse_hard_swish(model):
    """``model`` (Keras 3) with each ``blocks.hard_swish`` computed as
    x * (ReLU6(x + 3) / 6): the same function on the same layers (weights shared), in
    the layout the TFLite converter fuses into one HARD_SWISH op.

    Our h-swish is (x / 6) * ReLU6(x + 3) so that int8 stays on XNNPACK, which has no
    int8 HARD_SWISH; float files are better off fused (V3-Small fp32 1.24 vs 1.49 ms,
    ``benchmarks/deploy.py``). Models without h-swish come back unchanged.
    """
    import keras  # a Keras 3 model: the keras package, whichever _keras picked

    from mobilenet_tf import walkers

    swishes = _hard_swish_products(list(walkers.flat_layers(model)))  # clone_model rebuilds nested models too
    if not swishes:
        return model

    def call(layer, *args, **kwargs):
        kind, name = type(layer).__name__, layer.name
        if kind == "Rescaling" and name.endswith(blocks.HARD_SWISH_SCALED) \
                and name[:-len(blocks.HARD_SWISH_SCALED)] in swishes:
            return args[0]  # x, not x / 6
        outputs = layer(*args, **kwargs)
        if kind == "ReLU" and name.endswith(blocks.HARD_SWISH_GATE) and name[:-len(blocks.HARD_SWISH_GATE)] in swishes:
            return keras.layers.Rescaling(1.0 / 6.0, name=name + "_over_6")(outputs)  # ReLU6(x + 3) / 6
        return outputs

    # Cloned from an uncompiled view of the same graph: clone_model recompiles a compiled
    # model from its config, which fails for losses not registered as serializable.
    # ``input``/``output`` (not the flat ``inputs``/``outputs``) keep dict outputs a dict.
    view = keras.Model(model.input, model.output, name=model.name)
    return keras.models.clone_model(view, clone_function=lambda layer: layer, call_function=call, recursive=True)


def _hard_swish_products(layers):
    """Names of the ``blocks.hard_swish`` products among ``layers``: each Multiply
    beside whose name ``layers`` holds its "<name>_scaled" x / 6 Rescaling."""
    names = {layer.name for layer in layers}
    return {layer.name for layer in layers
            if type(layer).__name__ == "Multiply" and layer.name + blocks.HARD_SWISH_SCALED in names}


# Layers the 1/6 that ``fold_hard_swish_scale`` takes out of h-swish passes through
# unchanged (f(6x) = 6 f(x)), and the layers whose kernel takes it (kernel / 6).
SCALE_PASSING_LAYERS = ("GlobalAveragePooling2D", "AveragePooling2D", "MaxPooling2D", "Dropout", "Reshape",
                        "Flatten", "UpSampling2D", "ZeroPadding2D", "Identity")
SCALE_TAKING_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def fold_hard_swish_scale(model):
    """``model`` (Keras 3) for int8 files: each ``blocks.hard_swish`` computed as
    x * ReLU6(x + 3) and each ``blocks.hard_sigmoid`` as ReLU6(x + 3), six times their
    value, with the 1/6 moved into the kernel of the convolution or dense layer the
    result reaches (through pooling, dropout, reshapes and products; an SE block's
    gated features carry 36): the same function, exactly up to float rounding.

    XNNPACK fuses an int8 x * clamp(x + 3, 0, 6) into one hard-swish operator (the 1/6
    lands in its output scale), where (x / 6) * ReLU6(x + 3) costs three: TFLite's op
    profiler timed V3-Small's int8 file at 1.49 ms with 57 multiplies and 1.18 ms
    with 10. An h-swish / h-sigmoid whose result reaches any other layer (a residual
    add, as V3-Large's first one does, a ReLU, BatchNormalization, a nested model, the
    output) keeps its / 6. Models without h-swish come back unchanged.
    """
    # The outer graph's layers only: a factor does not cross into or out of a nested model.
    swishes = _hard_swish_products(model.layers)
    names = {layer.name for layer in model.layers}
    sigmoids = {layer.name for layer in model.layers
                if type(layer).__name__ == "Rescaling" and layer.name + blocks.HARD_SIGMOID_GATE in names}
    while swishes or sigmoids:
        folded, unfoldable = _fold_scales(model, swishes, sigmoids)
        if not unfoldable:
            return folded
        swishes, sigmoids = swishes - unfoldable, sigmoids - unfoldable
    return model


def _fold_scales(model, swishes, sigmoids):
    """One pass of ``fold_hard_swish_scale`` over the h-swish products ``swishes`` and
    h-sigmoid Rescalings ``sigmoids`` (layer names): (the folded model, the names of
    those whose factor reached a layer that cannot take it; the model is right only
    when there are none)."""
    import keras  # a Keras 3 model: the keras package, whichever _keras picked

    factors = {}  # id(tensor) -> (tensor, factor its value carries, names it comes from)
    unfoldable = set()

    def factor(tensor):
        return factors.get(id(tensor), (None, 1.0, frozenset()))[1:]

    def scaled(tensor, tensors, value, origin=()):
        sources = frozenset(origin).union(*(factor(t)[1] for t in tensors))
        if value != 1.0:
            factors[id(tensor)] = (tensor, value, sources)
        return tensor

    def refuse(tensor):  # a layer that cannot take the factor reads ``tensor``
        if isinstance(tensor, keras.KerasTensor):
            unfoldable.update(factor(tensor)[1])
        return tensor

    def call(layer, *args, **kwargs):
        kind, name = type(layer).__name__, layer.name
        tensors = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
        values = [factor(t)[0] for t in tensors]
        if kind == "Rescaling" and name.endswith(blocks.HARD_SWISH_SCALED) \
                and name[:-len(blocks.HARD_SWISH_SCALED)] in swishes:
            return args[0]  # x / 6 -> x: the product below carries the 6 (x itself has other readers)
        if kind == "Rescaling" and name in sigmoids:  # ReLU6(x + 3) / 6 -> ReLU6(x + 3), read only here
            return scaled(args[0], tensors, values[0] * 6.0, [name])
        if kind == "Multiply":
            swish = 6.0 if name in swishes else 1.0
            return scaled(layer(*args, **kwargs), tensors, swish * float(np.prod(values)), [name] * (name in swishes))
        if kind in SCALE_PASSING_LAYERS or (kind in ("Add", "Concatenate") and len(set(values)) == 1):
            return scaled(layer(*args, **kwargs), tensors, values[0])
        if kind in SCALE_TAKING_LAYERS and values[0] != 1.0:
            taking = type(layer).from_config(layer.get_config())
            outputs = taking(*args, **kwargs)
            kernel, *rest = layer.get_weights()
            taking.set_weights([kernel / values[0], *rest])
            return outputs
        keras.tree.map_structure(refuse, (args, kwargs))
        return layer(*args, **kwargs)

    view = keras.Model(model.input, model.output, name=model.name)
    folded = keras.models.clone_model(view, clone_function=lambda layer: layer, call_function=call)
    keras.tree.map_structure(refuse, folded.output)
    return folded, unfoldable


def calibration_generator(representative_data, steps):
    """A converter's ``representative_dataset``: at most ``steps`` float32 batches."""
    def calibration():
        for _, batch in zip(range(steps), representative_data):
            yield [np.asarray(batch, np.float32)]
    return calibration


def write_file(path, flatbuffer):
    """Write ``flatbuffer`` to ``path`` (parent folders made); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


RUNTIMES = ("litert", "tensorflow")


def default_runtime():
    """"litert" when the ``ai-edge-litert`` package is installed (the maintained
    interpreter; ``tf.lite.Interpreter`` is deprecated), else "tensorflow"."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "tensorflow"
    return "litert"


def interpreter_class(runtime=None):
    """The ``Interpreter`` class of ``runtime`` (one of ``RUNTIMES``; None: ``default_runtime()``)."""
    runtime = runtime or default_runtime()
    if runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {RUNTIMES}; got {runtime!r}.")
    if runtime == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ValueError("`runtime='litert'` needs the ai-edge-litert package (pip install ai-edge-litert).") \
                from error
        return Interpreter
    return tf.lite.Interpreter


class TFLiteModel:
    """A ``.tflite`` file as a callable: ``TFLiteModel(path, threads=2)(batch) -> numpy``.

    ``path``: the file, or its flatbuffer as ``bytes``. Runs on the LiteRT interpreter
    where installed, else ``tf.lite.Interpreter`` (``runtime`` picks one), both with
    XNNPACK. Resizes the input tensor to the batch's shape when it differs.
    """

    def __init__(self, path, threads=None, runtime=None):
        self.runtime = runtime or default_runtime()
        source = dict(model_content=path) if isinstance(path, bytes) else dict(model_path=path)
        self.interpreter = interpreter_class(self.runtime)(**source, num_threads=threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = self.interpreter.get_output_details()

    def __call__(self, batch):
        batch = np.asarray(batch, self._input["dtype"])
        if tuple(self._input["shape"]) != batch.shape:
            self.interpreter.resize_tensor_input(self._input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._outputs = self.interpreter.get_output_details()
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        outputs = [self.interpreter.get_tensor(o["index"]) for o in self._outputs]
        return outputs[0] if len(outputs) == 1 else outputs

    def op_counts(self):
        """{TFLite op name: count}, e.g. to see which ops an int8 model keeps in float.

        "DELEGATE" counts the XNNPACK partitions: 1 when XNNPACK runs the whole
        graph; every op XNNPACK refuses splits it further (the original ops stay
        listed too)."""
        counts = {}
        for op in self.interpreter._get_ops_details():
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def ops_outside_delegate(self):
        """{op name: count} of the ops XNNPACK left to TFLite's own kernels ({} when
        XNNPACK runs the whole graph)."""
        outside = {}
        for op in self.outside_ops():
            outside[op["op_name"]] = outside.get(op["op_name"], 0) + 1
        return outside

    def outside_ops(self):
        """The op details (name, inputs, outputs) of the ops XNNPACK left to TFLite's
        own kernels. A partition's ops are those its DELEGATE node's outputs are computed
        from, back to the partition's inputs; every other op runs outside."""
        ops = self.interpreter._get_ops_details()
        producer = {tensor: op["index"] for op in ops if op["op_name"] != "DELEGATE" for tensor in op["outputs"]}
        by_index = {op["index"]: op for op in ops}
        inside = set()
        for partition in (op for op in ops if op["op_name"] == "DELEGATE"):
            boundary, stack = set(partition["inputs"]), list(partition["outputs"])
            while stack:
                tensor = stack.pop()
                index = producer.get(tensor)
                if tensor in boundary or index is None or index in inside:
                    continue
                inside.add(index)
                stack.extend(by_index[index]["inputs"])
        return [op for op in ops if op["op_name"] != "DELEGATE" and op["index"] not in inside]


def to_onnx(model, path, opset=17):
    """Convert a Keras model to an ONNX file with tf2onnx (``pip install
    mobilenet_tf[onnx]``), from the SavedModel the TFLite converter reads, h-swish
    fused as in float TFLite files; returns ``path``. ``ONNXModel`` runs it on ONNX
    Runtime: the deployment a PyTorch-minded user would otherwise pick, side by side in
    ``benchmarks/deploy.py``. Converted by tf2onnx's command line in a child process
    (its documented path for SavedModels)."""
    try:
        import tf2onnx  # noqa: F401
    except ImportError as error:
        raise ValueError("`to_onnx` needs tf2onnx (pip install tf2onnx onnxruntime, or mobilenet_tf[onnx]).") \
            from error
    with tempfile.TemporaryDirectory() as saved_model:
        save_inference(fuse_hard_swish(model) if _is_keras3(model) else model, saved_model)
        done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model, "--output",
                               str(path), "--opset", str(opset)], capture_output=True, text=True)
    if done.returncode != 0 or not os.path.isfile(path):
        raise RuntimeError(f"tf2onnx could not convert the model (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return path


class ONNXModel:
    """An ``.onnx`` file on ONNX Runtime's CPU provider as a callable, like
    ``TFLiteModel``: ``ONNXModel(path, threads=2)(batch) -> numpy`` (the first output)."""

    def __init__(self, path, threads=None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ValueError("`ONNXModel` needs onnxruntime (pip install onnxruntime, or mobilenet_tf[onnx]).") \
                from error
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # Its threads otherwise spin after each run, taking the cores from whatever runs next
        # (timed in alternation with TFLite files, they made those up to 2x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self._input: np.asarray(batch, np.float32)})[0]


def save_function(model, fn, input_spec, path):
    """Write a SavedModel whose ``serving_default`` signature is ``fn`` (one input,
    ``input_spec``), holding ``model``'s variables and nothing else: the file
    ``model.export()`` / ``keras.export.ExportArchive`` write for conversion, without
    their walk over every tracked object (V3-Small SSDLite at 160 px: 1.9 s instead of
    5.0 s, and the converter reads it in 2.6 s instead of 4.5 s, same .tflite bytes).
    For tf_keras it also skips ``tf.saved_model.save(model)``'s tracing of every
    layer's call (V3-Small at 48 px: 3.0 s instead of 16.7 s). The module must hold the
    variables, not the Keras 3 model: holding the model left the weights unfrozen in
    the converted file (NaN outputs)."""
    serve = tf.function(fn, input_signature=[input_spec])
    module = tf.Module()
    module.serve = serve
    # Keras 3 variables wrap a tf.Variable (``.value``); tf_keras' are tf.Variables.
    module.model_variables = [v if isinstance(v, tf.Variable) else v.value for v in model.variables]
    tf.saved_model.save(module, path, signatures=serve)
    return path


def save_inference(model, path, batch=None):
    """``save_function`` of ``model(images, training=False)``: ``serve`` and the
    ``serving_default`` signature, input ``images`` (float32 batches of the model's input
    shape; ``batch``: a fixed batch size, None for any). Returns ``path``."""
    spec = tf.TensorSpec((batch,) + tuple(model.input_shape[1:]), tf.float32, name="images")
    return save_function(model, lambda images: model(images, training=False), spec, path)


def _is_keras3(model):
    return hasattr(model, "export") and type(model).__module__.startswith("keras")
