"""LPIPS, only when the package and its weights are already on this machine.

The ``lpips`` package bundles its linear-layer weights but fetches the
backbone (AlexNet/VGG ImageNet weights) through torchvision and ``torch.hub``.
Evaluation must never reach the network (cluster nodes may be offline, and a
silent download makes runs irreproducible), so we block ``torch.hub`` downloads
while building the model and report why LPIPS is unavailable instead.
"""

from __future__ import annotations

import contextlib

from ._arrays import as_image_pair

__all__ = ["LpipsMetric", "make_lpips"]


class DownloadBlocked(RuntimeError):
    """Raised in place of a torch.hub download while LPIPS is being built."""


@contextlib.contextmanager
def _no_hub_downloads():
    """Make ``torch.hub`` raise instead of downloading.

    torchvision's weight loading goes through ``torch.hub.load_state_dict_from_url``,
    which looks up ``download_url_to_file`` in the ``torch.hub`` module at call
    time, so replacing it there covers every backbone. The patch is process-wide
    for the duration of the block; build LPIPS once, not from several threads.
    """
    import torch.hub

    def refuse(url, *args, **kwargs):
        raise DownloadBlocked(f"not in the torch hub cache ({torch.hub.get_dir()}): {url}")

    original = torch.hub.download_url_to_file
    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


class LpipsMetric:
    """Callable ``(pred, gt) -> float`` for (H, W, 3) images in [0, 1]; lower is better."""

    def __init__(self, model, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device

    def __call__(self, pred, gt) -> float:
        import torch

        p, g = as_image_pair(pred, gt)

        def to_batch(img):
            return torch.from_numpy(img).float().permute(2, 0, 1)[None].to(self.device)

        with torch.no_grad():
            # normalize=True: lpips expects [-1, 1] and rescales [0, 1] inputs itself.
            value = self.model(to_batch(p), to_batch(g), normalize=True)
        return float(value.mean())


def make_lpips(net: str = "alex", device: str = "cpu") -> tuple[LpipsMetric | None, str]:
    """Build LPIPS without any download.

    Returns ``(metric, reason)``: the metric and a short description when it
    works, or ``None`` and a human-readable reason for the caller to log.
    """
    try:
        import lpips
    except ImportError as exc:  # includes a missing torchvision, which lpips imports
        return None, f"lpips not installed ({exc})"
    except Exception as exc:  # e.g. a torchvision built for another torch version
        return None, f"lpips not importable: {type(exc).__name__}: {exc}"
    try:
        with _no_hub_downloads():
            model = lpips.LPIPS(net=net, pretrained=True, verbose=False)
        metric = LpipsMetric(model, device)
    except DownloadBlocked as exc:
        return None, f"weights unavailable: backbone '{net}' {exc}"
    except Exception as exc:  # any other failure (missing file, bad net name, ...)
        return None, f"weights unavailable: {type(exc).__name__}: {exc}"
    return metric, f"lpips ({net}) loaded from local weights"

