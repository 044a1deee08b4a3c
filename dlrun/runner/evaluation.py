"""Evaluation of a split: the task's metrics (MetricAccumulator) summed over batches and ranks."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.runner import parallel
from dlrun.runner.experiment.record import Experiment
from dlrun.runner.experiment.steps import batch_tensors

METRICS = {
    "classification": ("loss", "accuracy"),
    "regression": ("loss", "mse", "mae", "r2"),
    "language_model": ("loss", "accuracy", "perplexity", "bits_per_char"),
}


def metric_names(task: str, split: str) -> list[str]:
    """The metrics evaluate_split reports for a task, e.g. val_loss, val_accuracy."""
    return [f"{split}_{m}" for m in METRICS[task]]


class MetricAccumulator:
    """Sums over batches, then the task's metrics: loss and accuracy (and a confusion matrix)
    for classification; MSE, MAE and R² for regression; loss, accuracy, perplexity and bits per
    character for language models (a token's loss spread over `chars_per_token` characters: 1
    for character models, the split's ratio for a tokenized corpus)."""

    def __init__(self, task: str, num_classes: int | None = None,
                 chars_per_token: float | None = None) -> None:
        self.task = task
        self.num_classes = num_classes
        self.chars_per_token = chars_per_token or 1.0
        self.loss_sum = 0.0
        self.samples = 0
        self.items = 0
        self.correct = 0
        self.sse = self.sae = self.sum_y = self.sum_y2 = 0.0
        self.confusion = (np.zeros((num_classes, num_classes), dtype=np.int64)
                          if task == "classification" and num_classes else None)

    def add(self, loss: float, out: np.ndarray, y: np.ndarray) -> None:
        n = y.shape[0]
        if self.task == "regression":
            y = y.reshape(out.shape).astype(np.float64)
            err = out.astype(np.float64) - y
            self.sse += float((err * err).sum())
            self.sae += float(np.abs(err).sum())
            self.sum_y += float(y.sum())
            self.sum_y2 += float((y * y).sum())
            self.loss_sum += loss * n
            self.items += y.size
        else:
            pred = out.argmax(-1)
            self.correct += int((pred == y).sum())
            self.loss_sum += loss * y.size
            self.items += y.size
            if self.confusion is not None:
                np.add.at(self.confusion, (y.reshape(-1), pred.reshape(-1)), 1)
        self.samples += n

    SUMS = ("loss_sum", "samples", "items", "correct", "sse", "sae", "sum_y", "sum_y2")

    def pack(self) -> np.ndarray:
        """Every sum as one float64 vector (counts stay exact below 2**53), to add across
        ranks; `unpack` takes the summed vector back."""
        sums = [float(getattr(self, k)) for k in self.SUMS]
        extra = self.confusion.ravel() if self.confusion is not None else []
        return np.concatenate([np.array(sums), np.asarray(extra, dtype=np.float64)])

    def unpack(self, values: np.ndarray) -> None:
        for k, v in zip(self.SUMS, values, strict=False):
            setattr(self, k, int(v) if isinstance(getattr(self, k), int) else float(v))
        if self.confusion is not None:
            self.confusion[...] = values[len(self.SUMS):].reshape(self.confusion.shape)

    def result(self, split: str) -> dict[str, float]:
        if self.task == "regression":
            out = {f"{split}_loss": self.loss_sum / max(self.samples, 1),
                   f"{split}_mse": self.sse / max(self.items, 1),
                   f"{split}_mae": self.sae / max(self.items, 1)}
            total = self.sum_y2 - self.sum_y * self.sum_y / max(self.items, 1)
            out[f"{split}_r2"] = 1.0 - self.sse / total if total > 0 else float("nan")
            return out
        loss = self.loss_sum / max(self.items, 1)
        out = {f"{split}_loss": loss, f"{split}_accuracy": self.correct / max(self.items, 1)}
        if self.task == "language_model":
            out[f"{split}_perplexity"] = float(np.exp(min(loss, 50.0)))
            out[f"{split}_bits_per_char"] = loss / float(np.log(2.0)) / self.chars_per_token
        return out


def evaluate_split(exp: Experiment, split: str, keep: dict[str, Any] | None = None
                   ) -> dict[str, float]:
    """The task's metrics on a split (see MetricAccumulator); with `keep` (a dict), the
    confusion matrix of a classification task is stored in keep['confusion']."""
    was_training = exp.model.training
    exp.model.eval()
    per_token = (exp.bundle.meta.get("chars_per_token") or {}).get(split)
    acc = MetricAccumulator(exp.task, exp.bundle.meta.get("num_classes"), per_token)
    try:
        for xb, yb in exp.loader(split):
            if len(yb) == 0:  # this rank's share of a last batch smaller than the job
                continue
            x, y = batch_tensors(exp, xb, yb)
            loss, out = exp.eval_step(x, y)
            acc.add(float(loss.item()), out.numpy(), y.numpy())
    finally:
        exp.model.train(was_training)
    if exp.parallel is not None:
        parallel.sum_metrics(exp.parallel.world, acc)
    if keep is not None and acc.confusion is not None:
        keep["confusion"] = acc.confusion
    return acc.result(split)
