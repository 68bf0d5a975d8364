"""Deep Compression's storage format (Han et al. 2016, sections 2 and 4): a real file.

A pruned and clustered kernel is stored as
- its **codebook**: the shared nonzero values (float32, at most ``2**bits - 1``),
- the **value indices**: for each stored entry, its codebook index (``bits`` wide
  before Huffman coding; symbol 0 is a filler zero, see below),
- the **positions** as relative indices: the number of zeros skipped before each
  stored entry, ``gap_bits`` wide (the paper's 8 bits for convolutions, 5 for fully
  connected layers); a gap the width cannot hold gets filler zeros (an entry of
  value 0 after ``2**gap_bits - 1`` zeros, Figure 2),
and both index streams are **Huffman coded** with canonical codes (code lengths
limited to 16 bits; the per-kernel length tables are in the file). Everything
else (biases, BatchNormalization, kernels with more shared values than ``bits``
allow, and kernels so small that their shared form would take more bytes) is
stored as raw float32. ``decode`` restores every value exactly (the shared values
by bit pattern); only a zero's sign is not kept: pruning leaves -0.0 where it masked
a negative weight, and storing those as entries would double a kernel's entries.

File layout: ``MAGIC``, a little-endian uint32 header length, the zlib-compressed
JSON header (format version, model name, per variable: path, shape, encoding,
counts, the byte sizes of its blocks and their CRC-32), then the blocks in header
order. Its size is what
``len(encode(model))`` says; ``report`` breaks it down as the paper's Table 1 does.
"""

import heapq
import json
import struct
import zlib

import numpy as np

MAGIC = b"MTF-DeepCompression\x00"
FORMAT_VERSION = 1
MAX_CODE_BITS = 16
CONV_GAP_BITS, FC_GAP_BITS = 8, 5  # the paper's relative-index widths


# --- canonical Huffman coding -------------------------------------------------------------

def code_lengths(counts, max_bits=MAX_CODE_BITS):
    """Huffman code lengths (uint8 array like ``counts``; 0 for unused symbols), no
    longer than ``max_bits``: counts are flattened (halved, keeping >= 1) until the
    optimal code fits."""
    counts = np.asarray(counts, np.int64)
    lengths = np.zeros(len(counts), np.uint8)
    used = np.flatnonzero(counts)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    if len(used) > 1 << max_bits:
        raise ValueError(f"{len(used)} symbols do not fit codes of at most {max_bits} bits.")
    weights = counts[used].copy()
    while True:
        heap = [(int(w), i, (i,)) for i, w in enumerate(weights)]
        heapq.heapify(heap)
        depth = np.zeros(len(used), np.int64)
        tie = len(used)
        while len(heap) > 1:
            w1, _, a = heapq.heappop(heap)
            w2, _, b = heapq.heappop(heap)
            members = a + b
            depth[list(members)] += 1
            heapq.heappush(heap, (w1 + w2, tie, members))
            tie += 1
        if depth.max() <= max_bits:
            lengths[used] = depth
            return lengths
        weights = np.maximum(weights // 2, 1)


def _checked_lengths(lengths):
    """Code lengths as int64, ``ValueError`` unless they are a valid prefix code's
    (each <= ``MAX_CODE_BITS``, Kraft sum <= 1): a corrupt table is refused."""
    lengths = np.asarray(lengths, np.int64)
    used = lengths[lengths > 0]
    if lengths.min(initial=0) < 0 or used.max(initial=0) > MAX_CODE_BITS or np.sum(2.0 ** -used) > 1.0:
        raise ValueError(f"corrupt Huffman table (code lengths must be 1..{MAX_CODE_BITS} and form a prefix code).")
    return lengths


def canonical_codes(lengths):
    """Canonical code of each symbol (uint32; lengths as ``code_lengths`` gives):
    symbols ordered by (length, symbol) take consecutive codes."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(len(lengths), np.uint32)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def huffman_encode(symbols, lengths):
    """Symbols (ints < len(lengths)) -> bytes: their canonical codes, MSB first, zero-padded."""
    symbols = np.asarray(symbols, np.int64)
    if symbols.size == 0:
        return b""
    lengths = _checked_lengths(lengths)
    codes, sizes = canonical_codes(lengths)[symbols].astype(np.int64), lengths[symbols]
    if sizes.min() == 0:
        raise ValueError("a symbol to encode has no code (its count was 0).")
    shifts = sizes[:, None] - 1 - np.arange(MAX_CODE_BITS)[None, :]
    bits = (codes[:, None] >> np.maximum(shifts, 0)) & 1
    return np.packbits(bits[shifts >= 0].astype(np.uint8)).tobytes()


def huffman_decode(data, lengths, count):
    """The ``count`` symbols of ``huffman_encode``'s bytes (table lookup on the next
    ``MAX_CODE_BITS`` bits); ``ValueError`` if the stream ends early or has more than
    its padding left over."""
    if count == 0:
        return np.zeros(0, np.int64)
    lengths = _checked_lengths(lengths)
    codes = canonical_codes(lengths)
    table_symbol = np.zeros(1 << MAX_CODE_BITS, np.int64)
    table_length = np.zeros(1 << MAX_CODE_BITS, np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = MAX_CODE_BITS - lengths[symbol]
        start = int(codes[symbol]) << shift
        table_symbol[start:start + (1 << shift)] = symbol
        table_length[start:start + (1 << shift)] = lengths[symbol]
    bits = np.concatenate([np.unpackbits(np.frombuffer(data, np.uint8)), np.zeros(MAX_CODE_BITS, np.uint8)])
    window = np.zeros(len(bits) - MAX_CODE_BITS, np.int64)
    for j in range(MAX_CODE_BITS):  # window[i]: the MAX_CODE_BITS bits from bit i, as an integer
        window |= bits[j:j + len(window)].astype(np.int64) << (MAX_CODE_BITS - 1 - j)
    out = np.empty(count, np.int64)
    position = 0
    for i in range(count):
        entry = window[position] if position < len(window) else 0
        if table_length[entry] == 0 or position + table_length[entry] > len(window):
            raise ValueError("truncated or corrupt Huffman stream.")
        out[i] = table_symbol[entry]
        position += table_length[entry]
    if len(window) - position >= 8:
        raise ValueError("corrupt Huffman stream (more bits than its symbols).")
    return out


# --- one kernel: codebook, relative positions, value indices ---------------------------------

def sparse_entries(flat, gap_bits):
    """A flat kernel -> (positions of the stored entries, gaps before them): its
    nonzeros plus a filler zero wherever ``2**gap_bits - 1`` zeros run out."""
    nonzero = np.flatnonzero(flat)
    limit = (1 << gap_bits) - 1
    previous = np.concatenate([[-1], nonzero[:-1]])
    runs = nonzero - previous - 1  # zeros before each nonzero
    fillers = runs // (limit + 1)  # entries needed in each run (each skips `limit` zeros, then sits on a zero)
    if not fillers.any():
        return nonzero, runs
    positions, gaps = [], []
    for start, run, nz, extra in zip(previous, runs, nonzero, fillers):
        for k in range(extra):
            positions.append(start + (k + 1) * (limit + 1))
            gaps.append(limit)
        positions.append(nz)
        gaps.append(run - extra * (limit + 1))
    return np.asarray(positions, np.int64), np.asarray(gaps, np.int64)


def _bit_patterns(values):
    """float32 values as their uint32 bit patterns (0 only for +0.0)."""
    return np.ascontiguousarray(values, np.float32).view(np.uint32)


def _shared_block(values, bits, gap_bits):
    """(entry dict for the header, block bytes) of a kernel stored as sparse shared
    values (the codebook holds their bit patterns: they come back bit for bit)."""
    flat = values.ravel()
    patterns = _bit_patterns(flat)
    codebook = np.unique(patterns[flat != 0])
    positions, gaps = sparse_entries(flat, gap_bits)
    symbols = np.searchsorted(codebook, patterns[positions]) + 1  # 0 = filler zero
    symbols[flat[positions] == 0] = 0
    value_lengths = code_lengths(np.bincount(symbols, minlength=len(codebook) + 1))
    gap_lengths = code_lengths(np.bincount(gaps, minlength=1 << gap_bits))
    parts = [codebook.tobytes(), value_lengths.tobytes(), gap_lengths.tobytes(),
             huffman_encode(symbols, value_lengths), huffman_encode(gaps, gap_lengths)]
    entry = dict(encoding="shared", entries=int(len(positions)), nonzeros=int(np.count_nonzero(flat)),
                 fillers=int(np.count_nonzero(symbols == 0)), bits=bits, gap_bits=gap_bits,
                 codebook=len(codebook), blocks=[len(p) for p in parts])
    return entry, b"".join(parts)


def _restore_shared(entry, block, size):
    offsets = np.cumsum([0, *entry["blocks"]])
    piece = lambda i: block[offsets[i]:offsets[i + 1]]
    codebook = np.frombuffer(piece(0), np.uint32)
    value_lengths, gap_lengths = np.frombuffer(piece(1), np.uint8), np.frombuffer(piece(2), np.uint8)
    symbols = huffman_decode(piece(3), value_lengths, entry["entries"])
    gaps = huffman_decode(piece(4), gap_lengths, entry["entries"])
    positions = np.cumsum(gaps + 1) - 1
    if len(positions) and positions[-1] >= size:
        raise ValueError("corrupt file: a stored position lies outside its kernel.")
    flat = np.zeros(size, np.uint32)
    flat[positions] = np.concatenate([np.zeros(1, np.uint32), codebook])[symbols]
    return flat.view(np.float32)


# --- the model file -------------------------------------------------------------------------

def bits_for(shared_values):
    """The fixed width of value indices for ``shared_values`` nonzero values per kernel
    (plus the filler-zero symbol): 16 clusters -> 5 bits."""
    return max(1, int(np.ceil(np.log2(shared_values + 1))))


def _check_bits(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 16:
        raise ValueError(f"`{name}` must be an integer in [1, 16]; got {value!r}.")


def encode(model, bits=8, conv_gap_bits=CONV_GAP_BITS, fc_gap_bits=FC_GAP_BITS):
    """Every variable of ``model`` -> the file's bytes.

    Kernels (rank >= 2) with at most ``2**bits - 1`` distinct nonzero values (a
    clustered kernel; pruned zeros are free) are stored as shared values; convolution
    kernels with ``conv_gap_bits`` relative indices, Dense kernels (rank 2) with
    ``fc_gap_bits``. Other variables, and kernels with more distinct values, as float32.
    """
    for name, value in (("bits", bits), ("conv_gap_bits", conv_gap_bits), ("fc_gap_bits", fc_gap_bits)):
        _check_bits(name, value)
    bits, conv_gap_bits, fc_gap_bits = int(bits), int(conv_gap_bits), int(fc_gap_bits)
    entries, blocks = [], []
    for path, variable in _variables_by_path(model).items():
        values = variable.numpy()
        if values.dtype != np.float32:
            raise ValueError(f"{path} is {values.dtype}: the format stores float32 variables only.")
        head = dict(path=path, shape=list(values.shape))
        entry, block = dict(encoding="float32", blocks=[values.size * 4]), values.tobytes()
        if values.ndim >= 2 and np.unique(_bit_patterns(values)[values != 0]).size <= (1 << bits) - 1:
            shared, packed = _shared_block(values, bits, fc_gap_bits if values.ndim == 2 else conv_gap_bits)
            if len(packed) < len(block):  # else float32 is smaller (a tiny or dense kernel)
                entry, block = shared, packed
        entry["crc32"] = zlib.crc32(block)
        entries.append({**head, **entry})
        blocks.append(block)
    header = zlib.compress(json.dumps(dict(format=FORMAT_VERSION, model=model.name, variables=entries),
                                      separators=(",", ":")).encode(), 9)
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(blocks)


def read_header(data):
    """The header dict of a file's bytes, and the offset where the blocks start;
    ``ValueError`` for bytes that are not such a file or are cut short."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"`data` must be the file's bytes; got {type(data).__name__}.")
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise ValueError("not a mobilenet_tf Deep Compression file (its first bytes are not "
                         f"{MAGIC!r}).")
    start = len(MAGIC) + 4
    if len(data) < start:
        raise ValueError("truncated Deep Compression file: it ends inside the header length.")
    (length,) = struct.unpack("<I", data[len(MAGIC):start])
    try:
        header = json.loads(zlib.decompress(data[start:start + length]))
    except (ValueError, zlib.error):
        raise ValueError("truncated or corrupt Deep Compression file: its header cannot be read.") from None
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"Deep Compression file format {header.get('format')!r}; this version reads "
                         f"{FORMAT_VERSION}.")
    expected = start + length + sum(sum(v["blocks"]) for v in header["variables"])
    if len(data) != expected:
        raise ValueError(f"truncated or padded Deep Compression file: {len(data)} bytes, its header says "
                         f"{expected}.")
    return header, start + length


KERAS_3_NAMES = {"depthwise_kernel": "kernel"}  # tf_keras' DepthwiseConv2D names its kernel so


def _variables_by_path(model):
    """{"layer name/variable name": variable} of ``model``, nested models' layers
    included: the same names in Keras 3 and tf_keras (whose variable names may carry
    no layer scope and end in ":0")."""
    from mobilenet_tf import walkers

    variables = {}
    for layer in walkers.flat_layers(model):
        for variable in layer.weights:
            name = variable.name.split(":")[0].split("/")[-1]
            path = f"{layer.name}/{KERAS_3_NAMES.get(name, name)}"
            if path in variables:
                raise ValueError(f"{model.name!r} has two variables named {path!r}: give its layers unique names.")
            variables[path] = variable
    return variables


def decode(data, model):
    """Load a file's weights into ``model``, matching variables by path (layer name /
    variable name: the same in Keras 3 and tf_keras), so a file written from one Keras
    loads into the other. The model must have the file's variables with the file's
    shapes, and no others; ``ValueError`` names what differs."""
    header, offset = read_header(data)
    variables = _variables_by_path(model)
    paths = [entry["path"] for entry in header["variables"]]
    missing, extra = [p for p in paths if p not in variables], [p for p in variables if p not in set(paths)]
    if missing or extra:
        raise ValueError(f"the file (model {header['model']!r}, {len(paths)} variables) does not fit {model.name!r} "
                         f"({len(variables)} variables): not in the model: {missing[:3]}, not in the file: "
                         f"{extra[:3]}.")
    for entry in header["variables"]:
        shape = list(variables[entry["path"]].shape)
        if shape != entry["shape"]:
            raise ValueError(f"the file's {entry['path']} has shape {entry['shape']} (model {header['model']!r}); "
                             f"{model.name!r} has {shape}.")
    restored = {}
    for entry in header["variables"]:
        size = int(np.prod(entry["shape"], dtype=np.int64))
        block = bytes(data[offset:offset + sum(entry["blocks"])])
        offset += len(block)
        if zlib.crc32(block) != entry["crc32"]:
            raise ValueError(f"corrupt Deep Compression file: the block of {entry['path']} fails its checksum.")
        flat = (np.frombuffer(block, np.float32) if entry["encoding"] == "float32"
                else _restore_shared(entry, block, size))
        restored[entry["path"]] = flat.reshape(entry["shape"])
    for path, values in restored.items():
        variables[path].assign(values)
    return model


def report(data):
    """The size breakdown of a file (the paper's Table 1 columns): per variable and
    in total, bits before Huffman coding (fixed-width value indices and relative
    positions, codebook) and as stored, against float32."""
    header, offset = read_header(data)
    rows = []
    for entry in header["variables"]:
        size = int(np.prod(entry["shape"], dtype=np.int64))
        row = dict(path=entry["path"], encoding=entry["encoding"], float32_bits=32 * size,
                   stored_bits=8 * sum(entry["blocks"]))
        if entry["encoding"] == "shared":
            codebook, value_table, gap_table, value_bytes, gap_bytes = entry["blocks"]
            row.update(nonzeros=entry["nonzeros"], entries=entry["entries"], fillers=entry["fillers"],
                       density=entry["nonzeros"] / max(size, 1),
                       index_bits=entry["entries"] * entry["bits"], position_bits=entry["entries"] * entry["gap_bits"],
                       codebook_bits=8 * codebook, table_bits=8 * (value_table + gap_table),
                       index_huffman_bits=8 * value_bytes, position_huffman_bits=8 * gap_bytes)
            row["fixed_width_bits"] = row["index_bits"] + row["position_bits"] + row["codebook_bits"]
        else:
            row["fixed_width_bits"] = row["stored_bits"]
        row["ratio"] = row["float32_bits"] / max(row["stored_bits"], 1)
        rows.append(row)
    total = dict(float32_bits=sum(r["float32_bits"] for r in rows), stored_bits=sum(r["stored_bits"] for r in rows),
                 fixed_width_bits=sum(r["fixed_width_bits"] for r in rows),
                 file_bytes=len(data))  # read_header checked it against the header
    total["header_bytes"] = offset
    total["ratio"] = total["float32_bits"] / (8 * total["file_bytes"])
    shared = [r for r in rows if r["encoding"] == "shared"]
    total["shared_variables"], total["float32_variables"] = len(shared), len(rows) - len(shared)
    total["float32_stored_values"] = sum(r["float32_bits"] // 32 for r in rows if r["encoding"] == "float32")
    return dict(model=header["model"], variables=rows, total=total)


def report_markdown(summary):
    """``report``'s breakdown as Markdown: one row per shared-value kernel, the
    float32 variables in one row, the total."""
    mb = lambda bits: f"{bits / 8e6:.4f}"
    lines = ["| variable | density | entries (fillers) | index bits | position bits | codebook bits | "
             "stored bits (Huffman) | float32 bits | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["variables"]:
        if r["encoding"] == "shared":
            lines.append(f"| {r['path']} | {r['density']:.3f} | {r['entries']:,} ({r['fillers']:,}) | "
                         f"{r['index_bits']:,} | {r['position_bits']:,} | {r['codebook_bits']:,} | "
                         f"{r['stored_bits']:,} | {r['float32_bits']:,} | {r['ratio']:.1f}x |")
    plain = [r for r in summary["variables"] if r["encoding"] == "float32"]
    bits = sum(r["stored_bits"] for r in plain)
    lines.append(f"| {len(plain)} variables as float32 | | | | | | {bits:,} | {bits:,} | 1.0x |")
    t = summary["total"]
    lines.append(f"| **file** ({t['header_bytes']:,} header bytes) | | | | | | {8 * t['file_bytes']:,} "
                 f"({mb(8 * t['file_bytes'])} MB; streams and codebooks before Huffman {mb(t['fixed_width_bits'])} MB) | "
                 f"{t['float32_bits']:,} ({mb(t['float32_bits'])} MB) | {t['ratio']:.1f}x |")
    return "\n".join(lines) + "\n"
