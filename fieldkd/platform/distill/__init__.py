"""Teacher -> student distillation machinery shared by every KD method.

    teacher = load_teacher("outputs/<run>/teacher/last.pt", field_cfg)     # or teacher_from_run(run_id)
    occupancy_from_teacher(renderer, teacher)                              # the student marches the teacher's grid
    source = OnTheFlySource(SphereInquirer(train.cameras, scene.aabb, seed=0), teacher,
                            SampleLayout.from_renderer(renderer), seed=0)
    # or, precomputed: source = StoreSource(write_store(folder, source, n_batches, batch_rays), layout)
    task = DistillationTask(student, renderer, teacher, source, pvd_schedule(), DistillConfig(total_steps=3000), device)
    Trainer(TrainerConfig(steps=3000)).fit(task)

Modules, one job each: ``teacher`` (a frozen field and how to load one),
``inquirers`` (where to ask), ``samples`` (the points teacher and student
share, and the teacher's answers there), ``filters`` (which answers to learn
from), ``losses`` (pure functions), ``terms`` (the loss terms, registered by name), ``schedule`` (progressive stages),
``store`` (answers as Parquet shards), ``task`` (the training task).
"""

from .filters import Filter, FilterResult, FrustumFilter, combine, in_frustum
from .inquirers import (BoxPointInquirer, CameraBoxInquirer, Inquiry, PointInquiry, SphereInquirer,
                        TrainingRayInquirer, look_at_many)
from .losses import (DENSITY_CLIP, KINDS, alpha_loss, colour_loss, density_loss, depth_loss, difference,
                     feature_loss, gaussian_kl, hypothesis_cross_entropy, interlevel_loss, rgb_loss, sample_alphas,
                     volume_moments)
from .samples import DistillBatch, OnTheFlySource, SampleLayout, TeacherSamples, occupancy_from_teacher
from .schedule import ScheduleConfig, Stage, pvd_schedule, stage_at, weights_at
from .store import DatasetShardSource, StoreSource, TeacherStore, columns_to_batch, store_schema, write_store
from .task import BatchSource, DistillationTask, DistillConfig
from .teacher import Teacher, load_teacher, teacher_from_run, teacher_from_state
from .terms import Term, TermContext, get_term, register_term, term_names

__all__ = [
    "BatchSource", "BoxPointInquirer", "CameraBoxInquirer", "DENSITY_CLIP", "DatasetShardSource", "DistillBatch",
    "DistillConfig", "DistillationTask", "Filter", "FilterResult", "FrustumFilter", "Inquiry", "KINDS",
    "OnTheFlySource", "PointInquiry", "SampleLayout", "ScheduleConfig", "SphereInquirer", "Stage", "StoreSource",
    "Teacher", "TeacherSamples", "TeacherStore", "Term", "TermContext", "TrainingRayInquirer", "alpha_loss",
    "colour_loss", "columns_to_batch", "combine", "density_loss", "depth_loss", "difference", "feature_loss",
    "gaussian_kl", "get_term", "hypothesis_cross_entropy", "in_frustum", "interlevel_loss", "load_teacher",
    "look_at_many", "occupancy_from_teacher", "pvd_schedule", "register_term", "rgb_loss", "sample_alphas",
    "stage_at", "store_schema", "teacher_from_run", "teacher_from_state", "term_names", "volume_moments",
    "weights_at", "write_store",
]
