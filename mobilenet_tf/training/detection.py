"""What the COCO detection recipes share (``recipes/ssdlite_coco.py``,
``recipes/faster_rcnn_coco.py``): their splits (synthetic shapes or TFDS COCO), the
checks of those flags, the COCO evaluator's metrics and files (detections.json,
ground_truth.json, detections.png) and the summary line.

A subclass sets ``Config`` and supplies the model (``build``, ``train_dataset``,
``prepare`` creating ``self.evaluator``, a ``heads.ssdlite.evaluation.COCOEvaluator``,
and ``self.val_ds``, its batches) and its own metrics and files on top of these.
"""

import dataclasses
import json
import os

import numpy as np

import mobilenet_tf
from mobilenet_tf.heads.ssdlite import data, visualize
from mobilenet_tf.training import recipe


class COCODetectionRecipe(recipe.Recipe):
    """Detection on synthetic shapes or COCO, scored by COCO mAP every --eval-every epochs.

    The config needs, besides ``recipe.Recipe``'s fields: ``backbone``, ``alpha``,
    ``dataset``, ``data_dir``, ``eval_examples``, ``display_threshold``,
    ``synthetic_classes``, ``synthetic_train_examples``, ``synthetic_eval_examples``.
    """

    real_dataset = "coco/2017"
    real_dataset_note = " (or name coco/2014)"
    monitor, plot_metric = "val_map", "map"
    synthetic_split = staticmethod(data.synthetic_split)

    @classmethod
    def validate(cls, config):
        mobilenet_tf.registry.get_entry(config.backbone)  # unknown name -> ValueError
        if config.dataset == "synthetic" and not 2 <= config.synthetic_classes <= 255:
            raise ValueError(f"`--synthetic-classes` must be in [2, 255]; got {config.synthetic_classes}.")
        if config.weights and not os.path.isfile(config.weights):
            raise ValueError(f"`--weights` {config.weights!r} is not a file.")
        return config

    def load_splits(self):
        train, val = super().load_splits()
        config = self.config
        if config.eval_examples:
            val = dataclasses.replace(val, dataset=val.dataset.take(config.eval_examples),
                                      num_examples=min(val.num_examples, config.eval_examples))
        return train, val

    def load_real_splits(self):
        config = self.config
        train = None if config.eval_only else data.coco_split("train", config.data_dir, name=config.dataset)
        return train, data.coco_split("validation", config.data_dir, name=config.dataset)

    def final_metrics(self, model, history):
        """COCOeval's numbers and the run's facts; subclasses add their own keys."""
        config = self.config
        self.results, self.detections = self.evaluator.final(model)
        return dict(self.results, backbone=config.backbone, alpha=config.alpha, dataset=config.dataset,
                    num_classes=self.val_split.num_classes, eval_images=self.val_split.num_examples,
                    detections=len(self.detections), dropped_eval_boxes=self.evaluator.dropped_boxes)

    def write_outputs(self, model, metrics):
        """detections.json (COCO results), ground_truth.json and detections.png (the
        first validation batch; detections >= ``--display-threshold``)."""
        run = self.run
        with open(run.path("detections.json"), "w") as f:
            json.dump(self.detections, f)
        with open(run.path("ground_truth.json"), "w") as f:
            json.dump(self.evaluator.ground_truth, f)
        images, info = next(iter(self.val_ds))
        out = {key: np.asarray(value) for key, value in self.evaluator.detector(model)(images).items()}
        truth = {key: np.asarray(info[key]) for key in ("boxes", "classes", "valid")}
        if "window" in info:  # padded batches: detections are on the canvas, the ground truth on each image
            truth["boxes"] = truth["boxes"] * np.tile(np.asarray(info["window"]), 2)[:, None, :]
        visualize.save_grid(np.asarray(images), truth, out, self.val_split.class_names, run.path("detections.png"),
                            self.config.display_threshold)

    def summary(self, metrics):
        shown = {key: "n/a" if self.results[key] is None else f"{self.results[key]:.4f}"
                 for key in ("map", "map50", "map75")}
        return f"COCO AP {shown['map']}  AP50 {shown['map50']}  AP75 {shown['map75']}  " + super().summary(metrics)
