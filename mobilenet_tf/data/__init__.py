"""Datasets: procedural synthetic data (no download) and real-data pipelines."""

# Starts the message of a data check that fails inside ``tf.data`` (where it surfaces
# as ``tf.errors.InvalidArgumentError``): ``engine.recipe_main`` reports such errors
# as bad input (exit 2, the message alone) instead of a traceback.
BAD_DATA = "bad input data: "


def without_autograph(fn):
    """``fn`` for ``Dataset.map``, traced as plain Python. The pipelines' functions use
    explicit ``tf.cond`` and loops over Python ints, so AutoGraph's source conversion
    buys nothing and costs seconds of start-up per pipeline."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(fn)
