"""The model zoo table: every published variant, measured by the profiler, next
to the number its paper prints. The README's table is ``zoo_markdown()``'s output
(a test keeps them equal), so nothing in it is typed by hand.
"""

import functools

from mobilenet_tf import registry
from mobilenet_tf.profile import profile


# A published figure (registry.PaperRow); every variant's rows live in its registry
# record, in registration order.
PaperRow = registry.PaperRow
PAPER_ROWS = registry.paper_rows()


def measure(row):
    """Profile of the model a ``PaperRow`` describes."""
    return measure_variant(row.name, row.alpha, row.resolution)


@functools.lru_cache(maxsize=None)
def measure_variant(name, alpha, resolution):
    """Profile of ``build(name, alpha=alpha)`` at a square resolution, 1000 classes
    (cached: the profile of a variant never changes within a process)."""
    model = registry.build(name, input_shape=(resolution, resolution, 3), **registry.options_for(name, alpha=alpha))
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
            if row.note not in notes:  # one footnote per text
                notes.append(row.note)
            mark = f" [{notes.index(row.note) + 1}]"
        lines.append(
            f"| {row.name} | {row.alpha:g} | {row.resolution} | {p.params / 1e6:.3f}M "
            f"| {p.conv_dense_params / 1e6:.3f}M | {p.madds / 1e6:.1f}M | {row.madds_m:g}M "
            f"| {row.params_m:g}M | {row.source}{mark} |"
        )
    lines.append("")
    lines += [f"[{i}] {note}." for i, note in enumerate(notes, start=1)]
    return "\n".join(lines)
