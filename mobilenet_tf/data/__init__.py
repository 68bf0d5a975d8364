"""Datasets: procedural synthetic data (no download) and real-data pipelines."""

# Starts the message of a data check that fails inside ``tf.data`` (where it surfaces
# as ``tf.errors.InvalidArgumentError``): ``engine.recipe_main`` reports such errors
# as bad input (exit 2, the message alone) instead of a traceback.
BAD_DATA = "bad input data: "
