"""What a person sees: banners, tables, TensorBoard scalars and curves.

The run directory's files (config.json, metrics.json, ...) are written by
:class:`keras_effnet.run_dir.RunDir`; this module only formats and plots.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from keras_effnet.train.progressive import Stage

__all__ = ["stage_banner", "summary_table", "plot_curves", "Scalars"]


def stage_banner(stage: Stage, num_stages: int, steps_per_epoch: int) -> str:
    """A boxed, multi-field banner printed when a stage starts."""
    ra = "off" if stage.randaug_magnitude is None else f"{stage.randaug_magnitude:.2f}"
    title = f" Stage {stage.index + 1}/{num_stages} "
    body = (f" epochs {stage.start_epoch + 1}-{stage.end_epoch} "
            f"({stage.epochs} x {steps_per_epoch} steps) | image {stage.image_size}px | "
            f"RandAugment {ra} | mixup {stage.mixup_alpha:.2f} | "
            f"cutmix {stage.cutmix_alpha:.2f} | dropout {stage.dropout:.2f} ")
    width = max(len(body), len(title) + 4)
    return "\n".join([f"+{title.center(width, '=')}+", f"|{body.ljust(width)}|",
                      f"+{'=' * width}+"])


def run_header(trainer: Any, resumed: str | None, stage: Stage | None) -> list[str]:
    """The lines a run starts with: model, data, strategy, plan, recipe, and where a
    resumed run picks up (``stage``: the stage it resumes in)."""
    from keras_effnet.train import strategy as strategy_lib

    config, v, source = trainer.config, trainer.variant, trainer.source
    s = trainer.schedule_kwargs
    lines = [
        f"keras_effnet training: {v.name} ({trainer.model.count_params():,} params) on "
        f"{config.dataset!r} ({source.num_train} train / {source.num_val} held-out images, "
        f"{source.num_classes} classes)",
        f"{strategy_lib.describe_strategy(trainer.strategy)}, {trainer.precision}, global "
        f"batch {trainer.global_batch}, {trainer.steps_per_epoch} steps/epoch, "
        f"{config.epochs} epochs in {len(trainer.plan)} {config.resolved_progressive_mode()} stage(s); "
        f"RMSProp peak LR {s['base_lr']:.4g} ({s['kind']}, warm-up "
        f"{s['warmup_epochs']:.3g} epochs), EMA "
        f"{config.ema_decay if trainer.ema else 'off'}; model_dir {trainer.model_dir}"]
    if resumed:
        lines.append(f"Resumed from {resumed}: step {int(trainer.step.numpy())}, epoch "
                     f"{int(trainer.epoch.numpy()) + 1}, batch "
                     f"{int(trainer.batch_in_epoch.numpy())} (stage {stage.index + 1}).")
    return lines


def summary_table(stages: Sequence[Stage], history: Sequence[dict[str, Any]],
                  final: dict[str, Any] | None = None) -> str:
    """Per-stage table of the last epoch's metrics, plus the final evaluation."""
    header = ("stage", "epochs", "image", "randaug", "mixup", "dropout", "train loss",
              "train acc", "val top-1", "time")
    rows = []
    for stage in stages:
        epochs = [h for h in history if stage.start_epoch <= h["epoch"] < stage.end_epoch]
        last = epochs[-1] if epochs else {}
        seconds = sum(h.get("seconds", 0.0) for h in epochs)
        ra = "off" if stage.randaug_magnitude is None else f"{stage.randaug_magnitude:.2f}"
        rows.append((str(stage.index + 1), f"{stage.start_epoch + 1}-{stage.end_epoch}",
                     f"{stage.image_size}px", ra, f"{stage.mixup_alpha:.2f}",
                     f"{stage.dropout:.2f}", _fmt(last.get("loss"), "{:.4f}"),
                     _fmt(last.get("accuracy"), "{:.2%}"),
                     _fmt(last.get("val_top1"), "{:.2%}"),
                     f"{seconds:.0f}s" if epochs else "-"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    if final:
        out.append(line)
        out.append(
            f"final ({final.get('weights', 'EMA')} weights, {final.get('image_size')}px, "
            f"{final.get('count', 0)} held-out images): top-1 {final['top1']:.2%}, "
            f"top-5 {final['top5']:.2%}, loss {final['loss']:.4f}")
    return "\n".join(out)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def plot_curves(path: str | os.PathLike, history: Sequence[dict[str, Any]],
                stages: Sequence[Stage]) -> Any:
    """``training_curves.png``: loss (log axis), accuracy and learning rate per epoch, with the
    stage boundaries as dashed lines labelled by image size. Returns the figure, or None
    (with a note on stderr) when matplotlib, an optional dependency, is not installed."""
    try:
        import matplotlib
    except ImportError:
        print(f"note: {os.path.basename(path)} not drawn: matplotlib is not installed "
              "(pip install 'keras_effnet[train]').", file=sys.stderr)
        return None
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(12, 3.6), dpi=100)
    axes = fig.subplots(1, 3)
    epochs = [h["epoch"] + 1 for h in history]

    def series(key):
        return [h.get(key) for h in history]

    axes[0].plot(epochs, series("loss"), "o-", label="train loss")
    if any(v is not None for v in series("val_loss")):
        axes[0].plot(epochs, series("val_loss"), "s-", label="val loss")
    axes[1].plot(epochs, series("accuracy"), "o-", label="train accuracy")
    if any(v is not None for v in series("val_top1")):
        axes[1].plot(epochs, series("val_top1"), "s-", label="val top-1 (EMA)")
    axes[2].plot(epochs, series("lr"), "o-", color="tab:green", label="learning rate")
    # Loss on a log axis: early losses can be 1,000x the final ones.
    log_loss = all(v is None or v > 0 for v in series("loss") + series("val_loss"))
    if log_loss:
        axes[0].set_yscale("log")
    for ax, title in zip(axes, ("loss (log scale)" if log_loss else "loss", "accuracy",
                                "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        for stage in stages:
            if stage.index > 0:
                ax.axvline(stage.start_epoch + 0.5, color="grey", linestyle="--",
                           linewidth=1)
            ax.text(stage.start_epoch + 0.6, 0.98, f"{stage.image_size}px",
                    transform=ax.get_xaxis_transform(), fontsize=7, va="top",
                    color="grey")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    from keras_effnet.run_dir import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return fig


def _scalar_metadata() -> bytes:
    # TensorBoard's scalar plugin metadata, so the event files read as scalars without
    # the tensorboard package (TensorFlow 2.21 no longer installs it).
    from tensorflow.core.framework import summary_pb2
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata.SerializeToString()


class Scalars:
    """TensorBoard scalars under ``model_dir/logs/{train,eval}`` (chief only).

    Written with ``tf.summary.write`` and the scalar plugin's metadata, which is what
    ``tf.summary.scalar`` does when the tensorboard package is installed.
    """

    def __init__(self, log_dir: str | None):
        import tensorflow as tf
        self._tf = tf
        self._metadata = _scalar_metadata()
        self._writers = {}
        if log_dir:
            for split in ("train", "eval"):
                self._writers[split] = tf.summary.create_file_writer(
                    os.path.join(log_dir, split))

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        """Scalars of ``split`` ("train" or "eval") at ``step``; None values skipped."""
        writer = self._writers.get(split)
        if writer is None:
            return
        with writer.as_default(step=int(step)):
            for name, value in values.items():
                if value is not None:
                    self._tf.summary.write(name, self._tf.constant(float(value),
                                                                   self._tf.float32),
                                           metadata=self._metadata)

    def flush(self) -> None:
        """Writes pending events to disk."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flushes and closes the writers."""
        for writer in self._writers.values():
            writer.close()


Log = Callable[[str], None]
