"""TFDS access shared by every task's loader: download-and-prepare with a clear
message for manual downloads, and split sizes that also work under
``tfds.testing.mock_data`` (whose split info is empty)."""

import os


def prepared_builder(name, data_dir=None, download=True, manual_help=None, hint=""):
    """``tfds.builder(name)``, downloaded and prepared when ``download``.

    Args:
        manual_help: message for datasets that need a manual download, with
            ``{name}``, ``{manual_dir}`` and ``{data_dir}`` placeholders.
        hint: appended to the unknown-dataset message (e.g. the valid choices).

    Raises:
        ValueError: unknown dataset, or it could not be prepared (for manual
            downloads: which files to put where).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise ValueError(f"unknown dataset {name!r}: {error}. {hint}".rstrip()) from error
    if download:
        try:
            builder.download_and_prepare()  # a no-op once prepared
        except Exception as error:
            root = data_dir or os.path.expanduser("~/tensorflow_datasets")
            manual_dir = os.path.join(root, "downloads", "manual")
            if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
                message = manual_help or "{name} needs a manual download into {manual_dir}."
                raise ValueError(message.format(name=name, manual_dir=manual_dir, data_dir=root)
                                 + f" ({type(error).__name__}: {str(error)[:200]})") from error
            raise ValueError(f"could not download or prepare {name!r} in {root!r}: {error}") from error
    return builder


def num_examples(builder, split, dataset):
    """Examples in ``split``: from the dataset info, else counted once."""
    splits = builder.info.splits
    count = splits[split].num_examples if splits and split in splits else 0
    if count < 1:  # unknown size (e.g. tfds.testing.mock_data)
        count = int(dataset.reduce(0, lambda n, _: n + 1))
    return count
