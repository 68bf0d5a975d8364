"""Face verification: the LFW 10-fold protocol, VAL at a fixed FAR, and ROC curves.

A pair is declared "same" when the squared L2 distance of its embeddings is
below a threshold. Following the LFW protocol (and FaceNet's evaluation code),
each fold is scored with the threshold chosen on the other nine folds:

- ``accuracy``: the threshold maximising accuracy on the nine folds.
- ``val_at_far(f)``: the largest threshold whose false-accept rate (different
  people accepted) on the nine folds is at most ``f``; VAL is the share of
  same-person pairs accepted on the held-out fold. V1 Table 14's "1e-4
  accuracy" is this VAL at FAR = 1e-4.

Results are means over folds (``*_std``: their standard deviation).
"""

import weakref

import numpy as np

from mobilenet_tf.data import finish

FARS = (1e-3, 1e-4)


def far_name(far):
    """1e-3 -> "1e-3", the suffix of the ``val_at_far_*`` keys."""
    return f"{far:.0e}".replace("e-0", "e-")


def embed(model, images, batch_size=64):
    """Embeddings of a dataset / array of (B, S, S, 3) batches: (N, D) float32."""
    import tensorflow as tf

    if isinstance(images, np.ndarray):
        images = finish(tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(batch_size))
    forward = _inference_function(model)
    return np.concatenate([np.asarray(forward(batch), np.float32) for batch in images])


_INFERENCE = weakref.WeakKeyDictionary()  # model -> its traced inference call


def _inference_function(model):
    """``model(batch, training=False)`` as one traced graph, kept per model so that every
    evaluation reuses it: twice as fast as eager calls on a CPU (V1 1.0 at 48 px, 4000
    images: 4.8 s with the trace vs 10.4 s), the same embeddings. Not Keras'
    ``predict_on_batch``: for a model built under MirroredStrategy it returns every
    replica's copy of the batch (2N rows on two devices, checked)."""
    import tensorflow as tf

    if model not in _INFERENCE:
        owner = weakref.ref(model)  # the function must not keep its model (the dict's key) alive
        _INFERENCE[model] = tf.function(lambda batch: owner()(batch, training=False), reduce_retracing=True)
    return _INFERENCE[model]


def squared_distances(first, second):
    """Row-wise ||a - b||^2 of two (M, D) arrays: (M,)."""
    return np.sum(np.square(np.asarray(first, np.float64) - np.asarray(second, np.float64)), axis=1)


def best_threshold(distances, same):
    """The threshold (accept when ``distance < threshold``) with the highest accuracy:
    midpoints between consecutive sorted distances, plus both ends."""
    values = np.unique(distances)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    order = np.argsort(distances)
    sorted_d, sorted_same = distances[order], same[order]
    accepted = np.searchsorted(sorted_d, candidates, side="left")  # pairs with d < threshold
    true_accepts = np.concatenate([[0], np.cumsum(sorted_same)])[accepted]
    false_accepts = accepted - true_accepts
    correct = true_accepts + (np.sum(~same) - false_accepts)
    return float(candidates[int(np.argmax(correct))])


def far_threshold(distances, same, far):
    """The largest threshold accepting at most ``far`` of the different-person pairs."""
    negatives = np.sort(distances[~same])
    allowed = int(np.floor(far * len(negatives) + 1e-9))
    if allowed >= len(negatives):
        return float(np.inf)
    return float(negatives[allowed])  # exactly ``allowed`` negatives lie strictly below it


def evaluate_distances(distances, same, fold, fars=FARS):
    """The 10-fold protocol on precomputed pair distances.

    Args:
        distances: (M,) squared distances.
        same: (M,) bool, same identity.
        fold: (M,) fold ids; every fold is tested with thresholds from the others.
        fars: false-accept rates for VAL.

    Returns:
        dict: accuracy, accuracy_std, threshold (mean of the folds'), and for
        each f in ``fars``: ``val_at_far_<f>``, ``val_at_far_<f>_std``,
        ``far_at_far_<f>`` (the FAR actually reached on the held-out folds),
        with f written as ``far_name(f)`` ("1e-3").
    """
    distances, same, fold = np.asarray(distances, np.float64), np.asarray(same, bool), np.asarray(fold)
    folds = np.unique(fold)
    if len(folds) < 2:
        raise ValueError(f"the protocol needs >= 2 folds; got {len(folds)}.")
    accuracies, thresholds = [], []
    vals, fars_reached = {f: [] for f in fars}, {f: [] for f in fars}
    for k in folds:
        test, train = fold == k, fold != k
        threshold = best_threshold(distances[train], same[train])
        thresholds.append(threshold)
        accuracies.append(np.mean((distances[test] < threshold) == same[test]))
        for f in fars:
            t = far_threshold(distances[train], same[train], f)
            accepted = distances[test] < t
            vals[f].append(np.mean(accepted[same[test]]) if same[test].any() else np.nan)
            fars_reached[f].append(np.mean(accepted[~same[test]]) if (~same[test]).any() else np.nan)
    results = dict(accuracy=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
                   threshold=float(np.mean(thresholds)), num_pairs=int(len(distances)), num_folds=int(len(folds)))
    for f in fars:
        results[f"val_at_far_{far_name(f)}"] = float(np.nanmean(vals[f]))
        results[f"val_at_far_{far_name(f)}_std"] = float(np.nanstd(vals[f]))
        results[f"far_at_far_{far_name(f)}"] = float(np.nanmean(fars_reached[f]))
    return results


def roc_curve(distances, same):
    """(false-accept rates, true-accept rates, AUC) over every threshold."""
    distances, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    order = np.argsort(distances, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(same[order]) / max(1, same.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(~same[order]) / max(1, (~same).sum())])
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def verify(model, pairs, batch_size=64, fars=FARS):
    """Verification accuracy, VAL@FAR and ROC of an embedding model.

    Args:
        model: images (B, S, S, 3) in [0, 255] -> (B, D) embeddings.
        pairs: a ``data.Pairs`` (10-fold protocol over its split), or a tuple
            ``(images_a, images_b, same)`` of (M, S, S, 3) arrays and (M,) bools
            (dealt into 10 folds by index).
        fars: false-accept rates for VAL.

    Returns:
        ``evaluate_distances``' dict plus ``auc`` and ``roc`` ((fpr, tpr) arrays),
        and ``distances`` / ``same`` (M,).
    """
    if isinstance(pairs, tuple):
        first_images, second_images, same = pairs
        distances = squared_distances(embed(model, np.asarray(first_images), batch_size),
                                      embed(model, np.asarray(second_images), batch_size))
        same = np.asarray(same, bool)
        fold = np.arange(len(same)) % 10
    else:
        from mobilenet_tf.heads.facenet import data, model as model_lib

        needed = np.unique(np.concatenate([pairs.first, pairs.second]))
        embeddings = embed(model, data.image_batches(pairs.split, model_lib.input_size(model), batch_size, needed))
        row = np.full(len(pairs.split), -1)
        row[needed] = np.arange(len(needed))
        distances = squared_distances(embeddings[row[pairs.first]], embeddings[row[pairs.second]])
        same, fold = pairs.same, pairs.fold
    results = evaluate_distances(distances, same, fold, fars)
    fpr, tpr, auc = roc_curve(distances, same)
    return dict(results, auc=auc, roc=(fpr, tpr), distances=distances, same=np.asarray(same, bool))


def plot_roc(curves, path, title="verification ROC"):
    """Save ROC curves ``{label: (fpr, tpr)}`` as a PNG, FAR on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, 1e-5), tpr, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate (VAL)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
