"""The plots a run draws, and what benchmarks/ draws with: matplotlib set up once, for PNG files (no display)."""
import matplotlib

matplotlib.use("Agg")  # before pyplot: files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fast_cifar.files import atomic_path  # noqa: E402


def save_figure(figure, path):
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def integer_ticks(axis):
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(epochs, path):
    numbers = [e["epoch"] for e in epochs]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-o"), ("test", "-s")):
        loss_axis.plot(numbers, [e[f"{split}_loss"] for e in epochs], style, label=split, markersize=3)
        accuracy_axis.plot(numbers, [100 * e[f"{split}_accuracy"] for e in epochs], style, label=split, markersize=3)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for axis in (loss_axis, accuracy_axis):
        integer_ticks(axis)
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(figure, path)


def plot_lr_finder(result, path):
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    axis.plot(result.lrs, result.smoothed_losses, label="smoothed loss")
    axis.axvline(result.anchor_lr, color="tab:green", linestyle=":", label=f"anchor {result.anchor_lr:.2e}")
    axis.axvline(result.suggested_lr, color="tab:red", linestyle="--",
                 label=f"suggested max LR {result.suggested_lr:.2e}")
    valley = f"{'flat valley' if result.flat else 'valley'} {result.valley_start_lr:.1e} to {result.edge_lr:.1e}"
    axis.axvspan(result.valley_start_lr, result.edge_lr, color="tab:gray", alpha=0.15, hatch="//" if result.flat else None,
                 label=f"{valley} ({result.valley_decades:.1f} decades)")
    title = "LR range test" + (": the valley is flat" if result.flat else "")
    axis.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    save_figure(figure, path)
