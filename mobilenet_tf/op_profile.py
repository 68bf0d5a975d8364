"""TFLite's op profiler on a ``.tflite`` file: where its time goes, op by op.

``op_profile(path, threads=2)`` runs the file on LiteRT's ``CompiledModel`` (CPU,
XNNPACK) with LiteRT's profiler on and returns its per-node-type summary: for each
kernel, how many nodes use it and the milliseconds per run they take. XNNPACK
reports its own operators inside the delegate ("Delegate/Convolution (NHWC, QC8)
IGEMM" is an int8 convolution XNNPACK runs as an indirect GEMM, "Delegate/Multiply
(ND)" an element-wise product), ops it left to TFLite appear under their TFLite
names (AVERAGE_POOL_2D). It is the profile ``benchmark_model
--enable_op_profiling=true`` prints, without building that binary.

The ``ai-edge-litert`` wheel's Python API has no profiler switch, so this calls the
LiteRT C API in ``libLiteRt.so`` (which the wheel ships) through ``ctypes``: an
environment, the model, options (CPU; the runtime options' ``enable_profiling``;
XNNPACK's ``num_threads``, both as LiteRT's TOML option strings), the compiled
model, one input / output buffer per tensor (a dynamic batch runs at ``batch``; float
inputs are uniform noise in [-1, 1]), then ``runs`` profiled calls after ``warmup``.
"""

import collections
import contextlib
import ctypes
import dataclasses
import os
import re
import tempfile

import numpy as np

_VOID = ctypes.c_void_p
_FLOAT32 = 1  # LiteRtElementType of float32 (TfLiteType's numbering)
_LOCK_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
_CPU = 1  # kLiteRtHwAcceleratorCpu
_TENSOR_TYPE_BYTES = 1024  # room for a LiteRtRankedTensorType: element type, rank, dims, strides


@dataclasses.dataclass
class NodeType:
    """One kernel of the profile: ``count`` nodes use it, taking ``ms`` per run in all
    (``share`` of the profiled time)."""
    name: str
    count: int
    ms: float
    share: float


@dataclasses.dataclass
class OpProfile:
    """``by_type``: the kernels, slowest first. ``text``: LiteRT's whole summary (run
    order, top nodes, by node type, delegate statistics)."""
    path: str
    threads: int
    runs: int
    by_type: list
    text: str

    @property
    def ms(self):
        """Profiled milliseconds per run, all kernels."""
        return sum(row.ms for row in self.by_type)

    def table(self, top=None):
        """The per-kernel rows as a Markdown table (``top``: the slowest that many)."""
        lines = ["| kernel | nodes | ms per run | share |", "|---|---|---|---|"]
        lines += [f"| {row.name} | {row.count} | {row.ms:.3f} | {row.share:.1%} |" for row in self.by_type[:top]]
        return "\n".join(lines)

    def by_operator(self):
        """{operator: (ms per run, nodes)}: the kernels of one operator summed over
        precisions and variants (``operator``)."""
        totals = collections.defaultdict(lambda: (0.0, 0))
        for row in self.by_type:
            ms, nodes = totals[operator(row.name)]
            totals[operator(row.name)] = (ms + row.ms, nodes + row.count)
        return dict(totals)


def operator(kernel):
    """XNNPACK's kernel name without "Delegate/", its precision and its variant number
    (and a repeated name once): "Delegate/Convolution (NHWC, QC8) DWConv" ->
    "Convolution DWConv", "Delegate/Mean (ND) Reduce2" -> "Mean Reduce",
    "Delegate/Average Pooling (NHWC, F32) Average Pooling" -> "Average Pooling"; a
    TFLite op's name (ops XNNPACK left out) stays as it is."""
    if not kernel.startswith("Delegate/"):
        return kernel
    name = re.sub(r"\s+", " ", re.sub(r"\(.*?\)|^Delegate/|\d+$", "", kernel)).strip()
    return re.sub(r"^(.+) \1$", r"\1", name)


def comparison_table(fp32, int8):
    """Two profiles of one model (its fp32 and int8 files) side by side as a Markdown
    table: each operator's ms per run (nodes) in both, slowest in fp32 first, and
    int8 / fp32; the last row sums all kernels."""
    totals = {"fp32": fp32.by_operator(), "int8": int8.by_operator()}
    names = sorted(set(totals["fp32"]) | set(totals["int8"]),
                   key=lambda n: (-totals["fp32"].get(n, (0.0, 0))[0], -totals["int8"].get(n, (0.0, 0))[0]))
    lines = ["| operator | fp32 ms (nodes) | int8 ms (nodes) | int8 / fp32 |", "|---|---|---|---|"]
    for name in names:
        ours, theirs = totals["fp32"].get(name), totals["int8"].get(name)
        ratio = f"{theirs[0] / ours[0]:.2f}" if ours and theirs and ours[0] > 0 and theirs[0] > 0 else "-"
        lines.append(f"| {name} | {_cell(ours)} | {_cell(theirs)} | {ratio} |")
    lines.append(f"| all | {fp32.ms:.3f} | {int8.ms:.3f} | {int8.ms / fp32.ms:.2f} |")
    return "\n".join(lines)


def _cell(total):
    return "-" if total is None else f"{total[0]:.3f} ({total[1]})"


def parse_summary(text):
    """The "Summary by node type" section of LiteRT's profile summary as ``NodeType``
    rows, slowest first. Its columns: node type (may hold spaces), count, avg ms (per
    node), avg %, cdf %, mem KB, times called."""
    rows, in_section = [], False
    for line in text.splitlines():
        if "Summary by node type" in line:
            in_section = True
            continue
        if not in_section or "[Node type]" in line:
            continue
        if not line.strip():
            if rows:
                break
            continue
        fields = line.split()
        if len(fields) < 7:
            break
        name = " ".join(fields[:-6])
        count, avg_ms, share = int(fields[-6]), float(fields[-5]), float(fields[-4].rstrip("%")) / 100
        rows.append(NodeType(name, count, count * avg_ms, share))
    if not rows:
        raise ValueError("LiteRT's profile summary has no 'Summary by node type' rows; got:\n" + text[:2000])
    return sorted(rows, key=lambda row: -row.share)


def _library():
    try:
        import ai_edge_litert
    except ImportError as error:
        raise ValueError("`op_profile` needs the ai-edge-litert package (pip install ai-edge-litert), whose "
                         "libLiteRt.so has the profiler.") from error
    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.isfile(path):
        raise ValueError(f"`op_profile` needs LiteRT's C library; the ai-edge-litert package has none at {path}.")
    return ctypes.CDLL(path)


@contextlib.contextmanager
def _native_stderr():
    """Collect what native code writes to stderr (LiteRT logs every accelerator it
    looks for); yields a function returning it, for error messages."""
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda: (log.seek(0), log.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _LiteRt:
    """The C functions used here, each checked: a non-zero LiteRtStatus raises."""

    def __init__(self, log):
        self.lib, self.log = _library(), log
        self.libc = ctypes.CDLL(None)
        self.libc.strdup.restype, self.libc.strdup.argtypes = _VOID, [ctypes.c_char_p]

    def __call__(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"LiteRT's {name} failed (status {status}). Its log:\n{self.log()[-3000:]}")

    def toml_options(self, identifier, text):
        """LiteRtOpaqueOptions holding the TOML string ``text`` under ``identifier``
        (LiteRT frees the string with ``free``)."""
        options = _VOID()
        payload = _VOID(self.libc.strdup(text.encode()))
        self("LiteRtCreateOpaqueOptions", ctypes.c_char_p(identifier.encode()), payload,
             ctypes.cast(self.libc.free, _VOID), ctypes.byref(options))
        return options


def op_profile(path, threads=2, runs=50, warmup=5, batch=1, seed=0):
    """Profile the ``.tflite`` file at ``path``: an ``OpProfile`` (per-kernel ms per run).

    Args:
        path: a ``.tflite`` file; signature 0 runs.
        threads: XNNPACK threads, >= 1.
        runs: profiled calls, >= 1; warmup: calls before them.
        batch: the size a dynamic (-1) input dimension runs at, >= 1.
        seed: the noise in float inputs.
    """
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be a .tflite file; {path!r} does not exist.")
    for flag, value, least in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0), ("batch", batch, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"`{flag}` must be an integer >= {least}; got {value!r}.")
    with _native_stderr() as log:
        call = _LiteRt(log)
        return _profile(call, os.fspath(path), threads, runs, warmup, batch, np.random.default_rng(seed))


def _profile(call, path, threads, runs, warmup, batch, rng):
    env, model, options, compiled = _VOID(), _VOID(), _VOID(), _VOID()
    buffers = []
    try:
        call("LiteRtCreateEnvironment", 0, None, ctypes.byref(env))
        try:
            call("LiteRtCreateModelFromFile", env, ctypes.c_char_p(path.encode()), ctypes.byref(model))
        except RuntimeError as error:
            raise ValueError(f"`path` must be a TFLite model; LiteRT could not read {path!r}.") from error
        call("LiteRtCreateOptions", ctypes.byref(options))
        call("LiteRtSetOptionsHardwareAccelerators", options, _CPU)
        profiling = call.toml_options("runtime_options_string", "enable_profiling = true\n")
        call("LiteRtAddOpaqueOptions", options, profiling)
        call("LiteRtAddOpaqueOptions", options, call.toml_options("xnnpack", f"num_threads = {threads}\n"))
        call("LiteRtCreateCompiledModel", env, model, options, ctypes.byref(compiled))
        signature = _VOID()
        call("LiteRtGetModelSignature", model, 0, ctypes.byref(signature))
        inputs = _buffers(call, env, compiled, signature, "Input", buffers, batch)
        # Re-allocated after the inputs' resize, so output buffers meet the new sizes.
        outputs_count = ctypes.c_size_t()
        call("LiteRtGetNumSignatureOutputs", signature, ctypes.byref(outputs_count))
        layouts = ctypes.create_string_buffer(_TENSOR_TYPE_BYTES * max(1, outputs_count.value))
        call("LiteRtGetCompiledModelOutputTensorLayouts", compiled, ctypes.c_size_t(0), outputs_count, layouts,
             ctypes.c_bool(True))
        outputs = _buffers(call, env, compiled, signature, "Output", buffers, batch)
        for buffer, element_type in inputs:
            _fill(call, buffer, element_type, rng)
        in_array = (_VOID * len(inputs))(*[b for b, _ in inputs])
        out_array = (_VOID * len(outputs))(*[b for b, _ in outputs])

        def run():
            call("LiteRtRunCompiledModel", compiled, ctypes.c_size_t(0), ctypes.c_size_t(len(inputs)), in_array,
                 ctypes.c_size_t(len(outputs)), out_array)

        for _ in range(warmup):
            run()
        profiler = _VOID()
        call("LiteRtCompiledModelGetProfiler", compiled, ctypes.byref(profiler))
        if not profiler.value:
            raise RuntimeError("LiteRT made no profiler for this model (profiling did not switch on).")
        call("LiteRtStartProfiler", profiler)
        for _ in range(runs):
            run()
        call("LiteRtStopProfiler", profiler)
        summary = ctypes.c_char_p()
        call("LiteRtGetProfileSummary", profiler, compiled, ctypes.byref(summary))
        text = summary.value.decode()
        call.libc.free(ctypes.cast(summary, _VOID))
    finally:
        for buffer in buffers:
            call.lib.LiteRtDestroyTensorBuffer(buffer)
        for name, handle in (("LiteRtDestroyCompiledModel", compiled), ("LiteRtDestroyOptions", options),
                             ("LiteRtDestroyModel", model), ("LiteRtDestroyEnvironment", env)):
            if handle.value:
                getattr(call.lib, name)(handle)
    return OpProfile(path, threads, runs, parse_summary(text), text)


def _buffers(call, env, compiled, signature, kind, owned, batch):
    """[(LiteRtTensorBuffer, element type)] for the signature's inputs or outputs
    (``kind``), each made to the compiled model's requirements. A dynamic dimension
    (-1) is run at ``batch``: inputs are resized to it."""
    count = ctypes.c_size_t()
    call(f"LiteRtGetNumSignature{kind}s", signature, ctypes.byref(count))
    made = []
    for index in range(count.value):
        tensor, requirements, buffer = _VOID(), _VOID(), _VOID()
        call(f"LiteRtGetSignature{kind}TensorByIndex", signature, ctypes.c_size_t(index), ctypes.byref(tensor))
        tensor_type = ctypes.create_string_buffer(_TENSOR_TYPE_BYTES)
        call("LiteRtGetRankedTensorType", tensor, tensor_type)
        # LiteRtRankedTensorType: int32 element type, then the layout: rank (low 7 bits), dims.
        element_type = int.from_bytes(tensor_type.raw[0:4], "little")
        rank = int.from_bytes(tensor_type.raw[4:8], "little") & 0x7F
        dims = np.frombuffer(tensor_type.raw[8:8 + 4 * rank], np.int32).copy()
        if (dims < 0).any():
            dims[dims < 0] = batch
            ctypes.memmove(ctypes.addressof(tensor_type) + 8, dims.tobytes(), 4 * rank)
            if kind == "Input":
                call("LiteRtCompiledModelResizeInputTensor", compiled, ctypes.c_size_t(0), ctypes.c_size_t(index),
                     (ctypes.c_int * rank)(*dims), ctypes.c_size_t(rank))
        call(f"LiteRtGetCompiledModel{kind}BufferRequirements", compiled, ctypes.c_size_t(0), ctypes.c_size_t(index),
             ctypes.byref(requirements))
        call("LiteRtCreateManagedTensorBufferFromRequirements", env, tensor_type, requirements, ctypes.byref(buffer))
        owned.append(buffer)
        made.append((buffer, element_type))
    return made


def _fill(call, buffer, element_type, rng):
    """Float32 inputs get uniform noise in [-1, 1]; others stay as allocated."""
    if element_type != _FLOAT32:
        return
    size, address = ctypes.c_size_t(), _VOID()
    call("LiteRtGetTensorBufferSize", buffer, ctypes.byref(size))
    call("LiteRtLockTensorBuffer", buffer, ctypes.byref(address), _LOCK_WRITE)
    try:
        values = np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_float)), (size.value // 4,))
        values[:] = rng.uniform(-1.0, 1.0, values.shape)
    finally:
        call("LiteRtUnlockTensorBuffer", buffer)
