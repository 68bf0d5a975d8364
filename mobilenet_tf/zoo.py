"""The model zoo table: every published variant, measured by the profiler, next
to the number its paper prints. The README's table is ``zoo_markdown()``'s output
(a test keeps them equal), so nothing in it is typed by hand.
"""

import dataclasses
import functools

from mobilenet_tf import registry
from mobilenet_tf.profile import profile


@dataclasses.dataclass(frozen=True)
class PaperRow:
    """A published figure: multiply-adds and params in millions, and where printed.

    ``note`` explains a reference we do not expect to match (tests skip nothing
    silently: they check every row whose ``check_*`` is True).
    """

    name: str
    alpha: float
    resolution: int
    madds_m: float
    params_m: float
    source: str
    check_madds: bool = True
    check_params: bool = True
    note: str = ""


PAPER_ROWS = (
    PaperRow("v1", 1.0, 224, 569, 4.2, "V1 Table 6"),
    PaperRow("v1", 0.75, 224, 325, 2.6, "V1 Table 6"),
    PaperRow("v1", 0.5, 224, 149, 1.3, "V1 Table 6"),
    PaperRow("v1", 0.25, 224, 41, 0.5, "V1 Table 6"),
    PaperRow("v1", 1.0, 192, 418, 4.2, "V1 Table 7"),
    PaperRow("v1", 1.0, 160, 290, 4.2, "V1 Table 7"),
    PaperRow("v1", 1.0, 128, 186, 4.2, "V1 Table 7"),
    PaperRow("v2", 1.4, 224, 585, 6.9, "V2 Table 4", check_params=False,
             note="paper prints 6.9M params; TF-slim's 1.4 checkpoint has 6.06M, as counted here"),
    PaperRow("v2", 1.0, 224, 300, 3.4, "V2 Table 4, V3 Table 3"),
    PaperRow("v2", 0.35, 224, 59.2, 1.6, "V3 Table 3"),
    PaperRow("v3_large", 1.0, 224, 219, 5.4, "V3 Table 3"),
    PaperRow("v3_large", 0.75, 224, 155, 4.0, "V3 Table 3"),
    PaperRow("v3_small", 1.0, 224, 56, 2.5, "V3 Table 3"),
    PaperRow("v3_small", 0.75, 224, 44, 2.0, "V3 Table 3"),
    PaperRow("v3_large_minimalistic", 1.0, 224, 209, 3.9, "TF-slim"),
    PaperRow("v3_small_minimalistic", 1.0, 224, 65, 2.0, "TF-slim", check_madds=False,
             note="slim counts V3-Small at 66M where the final paper says 56M; "
                  "its 65M for minimalistic uses that count"),
)


def measure(row):
    """Profile of the model a ``PaperRow`` describes."""
    return measure_variant(row.name, row.alpha, row.resolution)


@functools.lru_cache(maxsize=None)
def measure_variant(name, alpha, resolution):
    """Profile of ``build(name, alpha=alpha)`` at a square resolution, 1000 classes
    (cached: the profile of a variant never changes within a process)."""
    model = registry.build(name, alpha=alpha, input_shape=(resolution, resolution, 3))
    return profile(model)


def zoo_markdown(rows=PAPER_ROWS):
    """The zoo as a Markdown table (params and MAdds measured on 1000-class models)."""
    lines = [
        "| model | alpha | resolution | params | params (conv+dense) | MAdds | paper MAdds | paper params | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for row in rows:
        p = measure(row)
        mark = ""
        if row.note:
            notes.append(row.note)
            mark = f" [{len(notes)}]"
        lines.append(
            f"| {row.name} | {row.alpha:g} | {row.resolution} | {p.params / 1e6:.3f}M "
            f"| {p.conv_dense_params / 1e6:.3f}M | {p.madds / 1e6:.1f}M | {row.madds_m:g}M "
            f"| {row.params_m:g}M | {row.source}{mark} |"
        )
    lines.append("")
    lines += [f"[{i}] {note}." for i, note in enumerate(notes, start=1)]
    return "\n".join(lines)
