"""TFDS access shared by every task's loader: download-and-prepare with a clear
message for each way preparation fails (a missing Python module, manual-download
files that are not there yet, anything else with the dataset and directory it
was prepared in), and split sizes that also work under ``tfds.testing.mock_data``
(whose split info is empty)."""

import os
import re

# Files each manual-download dataset reads from ``<data_dir>/downloads/manual``
# (TFDS builder sources). Builders whose config lists its archives (cityscapes'
# ``zip_root``) are read from the config instead.
MANUAL_FILES = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    "imagenet2012_subset": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}

# Python module -> the pip package that provides it, where the names differ.
PIP_PACKAGES = {
    "PIL": "pillow",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "google.protobuf": "protobuf",
    "tree": "dm-tree",
    "apache_beam": "apache-beam",
}


def prepared_builder(name, data_dir=None, download=True, manual_help=None, hint=""):
    """``tfds.builder(name)``, downloaded and prepared when ``download``.

    Args:
        name: TFDS name, with an optional config and version
            ("cityscapes/semantic_segmentation").
        data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets).
        download: download and prepare the dataset (a no-op once prepared).
        manual_help: message for datasets that need a manual download, with
            ``{name}``, ``{manual_dir}`` and ``{data_dir}`` placeholders.
        hint: appended to the unknown-dataset message (e.g. the valid choices).

    Raises:
        ValueError: unknown dataset; a Python module that preparation imports is
            missing (names it and the ``pip install`` that fixes it); the
            manual-download files are not in the manual directory (which files to
            put where); or any other preparation error (with the dataset name
            and data directory).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        missing = _import_error(error)
        if missing is not None:
            raise ValueError(_missing_module_message(name, missing)) from error
        raise ValueError(f"unknown dataset {name!r}: {_not_found_summary(error)} {hint}".rstrip()) from error
    if download:
        try:
            builder.download_and_prepare()  # a no-op once prepared
        except Exception as error:
            raise _preparation_error(builder, name, manual_help, error) from error
    return builder


def _preparation_error(builder, name, manual_help, error):
    """The ValueError for a failed ``download_and_prepare``."""
    missing = _import_error(error)
    if missing is not None:
        return ValueError(_missing_module_message(name, missing))
    root = str(builder.data_dir_root)
    manual_dir = os.path.join(root, "downloads", "manual")
    cause = f"{type(error).__name__}: {_shorten(str(error))}"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        problem = manual_files_problem(builder, manual_dir)
        if problem:
            message = manual_help or "{name} needs a manual download into {manual_dir}."
            message = message.format(name=name, manual_dir=manual_dir, data_dir=root) + " " + problem
            if not isinstance(error, AssertionError):  # TFDS' own missing-files complaint adds nothing
                first_line = (str(error).splitlines() or [""])[0]
                message += f" ({type(error).__name__}: {_shorten(first_line, 200)})"
            return ValueError(message)
        return ValueError(f"could not prepare {name!r} in {root!r} from the manual-download files in "
                          f"{manual_dir!r} (they are all there, so the error is something else; check that "
                          f"they are complete, uncorrupted downloads): {cause}")
    return ValueError(f"could not download or prepare {name!r} in {root!r}: {cause}")


def manual_files_problem(builder, manual_dir):
    """What is missing from ``manual_dir`` for ``builder``: "Missing from <dir>: <files>."
    for the files it is known to read, "<dir> is missing or empty." for other
    manual-download builders, or None when nothing is visibly missing."""
    config = getattr(builder, "builder_config", None)
    zip_root = getattr(config, "zip_root", None) or {}  # cityscapes: {feature: (zip file, root folder)}
    needed = sorted({entry[0] for entry in zip_root.values()}) or list(MANUAL_FILES.get(builder.name, ()))
    if needed:
        absent = [f for f in needed if not os.path.exists(os.path.join(manual_dir, f))]
        return f"Missing from {manual_dir}: {', '.join(absent)}." if absent else None
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
        return f"{manual_dir} is missing or empty."
    return None


def _import_error(error):
    """The ImportError in ``error``'s chain (cause or context), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ImportError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _missing_module_message(name, error):
    """The message for an ImportError raised while building or preparing ``name``."""
    text = (str(error).splitlines() or [""])[0]
    found = re.search(r"No module named '([\w.]+)'", str(error))
    module = (found.group(1) if found else "") or error.name or ""  # some wrappers drop ``name``
    package = PIP_PACKAGES.get(module) or PIP_PACKAGES.get(module.split(".")[0]) or module.split(".")[0]
    cause = f"({type(error).__name__}: {_shorten(text, 200)})"
    if found or isinstance(error, ModuleNotFoundError):
        return (f"could not prepare TFDS dataset {name!r}: Python module {module!r} is missing {cause}. "
                f"Install it into this Python environment with `pip install {package}`, then rerun.")
    if module:  # "cannot import name X from Y": Y is there but not the version expected
        return (f"could not prepare TFDS dataset {name!r}: importing from Python module {module!r} failed "
                f"{cause}; its installed version does not match. Upgrade it with `pip install -U {package}`, "
                "then rerun.")
    return (f"could not prepare TFDS dataset {name!r}: a Python import failed {cause}. Install the package "
            "that provides it with `pip install <package>`, then rerun.")


def _not_found_summary(error):
    """TFDS' not-found message without its list of every dataset: the first line and
    its "Did you mean" suggestion."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    keep = lines[:1] + [line for line in lines[1:] if line.startswith("Did you mean")]
    text = " ".join(keep).rstrip(" .")
    return _shorten(text if text.endswith(("?", ":")) else text + ".")


def _shorten(text, limit=500):
    return text if len(text) <= limit else text[:limit] + " ..."


def num_examples(builder, split, dataset):
    """Examples in ``split``: from the dataset info, else counted once."""
    splits = builder.info.splits
    count = splits[split].num_examples if splits and split in splits else 0
    if count < 1:  # unknown size (e.g. tfds.testing.mock_data)
        count = int(dataset.reduce(0, lambda n, _: n + 1))
    return count
