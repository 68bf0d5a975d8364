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


# "0" turns tf.data's model-based autotuning off in every pipeline of the package. The
# autotuner runs a thread per iterator, and an iterator's destruction waits for it (up to
# 0.3 s each in a loop of short epochs): beside another busy process a training process
# sat idle at times (two recipe runs side by side on 2 cores: 102-173 s each with it,
# 97-106 s without; alone, 93-94 s either way; the test suite: 229 core-seconds idle with
# it, 40 without). Maps then run one call per core and prefetch falls back to its own
# buffer sizing; under `--deterministic` (op determinism) the data are the same.
AUTOTUNE_ENV = "MOBILENET_TF_DATA_AUTOTUNE"


def finish(dataset, *, deterministic=None):
    """What every input pipeline ends with: ``dataset`` prefetched, with the package's
    ``tf.data.Options``. ``deterministic``: fix the order parallel maps give (None:
    tf.data's default). ``MOBILENET_TF_DATA_AUTOTUNE=0`` (``AUTOTUNE_ENV``) turns
    autotuning off."""
    import os

    import tensorflow as tf

    autotune = os.environ.get(AUTOTUNE_ENV, "1")
    if autotune not in ("0", "1"):
        raise ValueError(f"`{AUTOTUNE_ENV}` must be '0' or '1'; got {autotune!r}.")
    options = tf.data.Options()
    if deterministic is not None:
        options.deterministic = deterministic
    options.autotune.enabled = autotune == "1"
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
