"""The cascade multi-view stereo network of KD-MVS (CasMVSNet form), its losses and Trainer tasks.

    net = build_cascade_mvs({"hypotheses": [48, 32, 8], "uncertainty": True})
    out = net(images, intrinsics, extrinsics, depth_min, depth_max)   # MVSOutput
    task = SelfSupervisedMVSTask(net, batches, device, cfg)           # the teacher's round
    task = LabelledMVSTask(net, batches, device, cfg)                 # a student's round
    predict(net, batch)                                               # {"depth", "confidence"}

Geometry shared by pseudo-labels and fusion: :mod:`.consistency` (reprojection, agreeing views)
and :mod:`.labels` (probabilistic pseudo-labels from the cross-view check).
"""

from .network import DEFAULTS, CascadeMVSNet, MVSOutput, build_cascade_mvs
from .tasks import LabelledMVSTask, SelfSupervisedMVSTask, predict

__all__ = ["DEFAULTS", "CascadeMVSNet", "LabelledMVSTask", "MVSOutput", "SelfSupervisedMVSTask",
           "build_cascade_mvs", "predict"]
