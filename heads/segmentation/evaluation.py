"""Full-size LR-ASPP evaluation: mIoU over every labelled pixel of the validation set.

The training model's weights are copied into a model built at the evaluation size
(the paper's pooling kernel is fixed by the training crop; the evaluation image is
larger), then a streaming confusion matrix (``metrics.ConfusionMatrix``) gives mIoU.

    >>> evaluator = Evaluator(build_lraspp("v3_small", 5, (128, 128, 3)), num_classes=5, val_ds=val_ds)
    >>> evaluator(trained)          # {"miou": ..., "pixel_accuracy": ...}
"""

from mobilenet_tf.heads.segmentation import metrics as seg_metrics


class Evaluator:
    """``evaluator(trained) -> {"miou", "pixel_accuracy"}`` for ``run_training(evaluate=...)``.

    Args:
        model: the model at the evaluation size, the trained model's architecture
            (same weights, in the same order).
        num_classes: classes (label 255 is ignored).
        val_ds: (images, labels) batches at the evaluation size.

    ``last_matrix`` keeps the latest confusion matrix: training always evaluates its
    last epoch and nothing changes the weights after it, so the final metrics reuse
    it instead of a second pass (``final_matrix``).
    """

    result_keys = ("miou", "pixel_accuracy")  # what a call returns (``fit`` logs val_<key>)

    def __init__(self, model, num_classes, val_ds):
        self.model = model
        self.confusion = seg_metrics.ConfusionMatrix(self.model, num_classes)
        self.val_ds = val_ds
        self.last_matrix = None

    def matrix(self, trained):
        """The (C, C) confusion matrix of ``trained``'s weights on the validation set."""
        self.model.set_weights(trained.get_weights())
        self.last_matrix = self.confusion(self.val_ds)
        return self.last_matrix

    def final_matrix(self, trained):
        """The last matrix, computed now when this process evaluated none (``--eval-only``,
        or a resumed finished run)."""
        return self.last_matrix if self.last_matrix is not None else self.matrix(trained)

    def __call__(self, trained):
        results = seg_metrics.scores(self.matrix(trained))
        return {key: results[key] for key in self.result_keys}
