"""BTS density fields ("Behind The Scenes"): a single-view and a multi-view head on one
image encoder-decoder, their self-supervised and distillation losses, and training tasks."""

from .losses import edge_aware_smoothness, kd_density_loss, photometric_error, reconstruction_loss, ssim_3x3
from .model import DEFAULTS, HEADS, BTSNet, DensityOutput, build_bts
from .tasks import (TASK_DEFAULTS, DistilledBTSTask, SelfSupervisedBTSTask, density_in_input_frame,
                    predict_occupied, render_input_depth)

__all__ = ["DEFAULTS", "HEADS", "TASK_DEFAULTS", "BTSNet", "DensityOutput", "DistilledBTSTask",
           "SelfSupervisedBTSTask", "build_bts", "density_in_input_frame", "edge_aware_smoothness",
           "kd_density_loss", "photometric_error", "predict_occupied", "reconstruction_loss",
           "render_input_depth", "ssim_3x3"]
