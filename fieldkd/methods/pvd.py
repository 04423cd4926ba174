"""pvd: progressive volume distillation from one field architecture into another (methods.md §1).

1. teacher: train ``teacher.field`` on the images, or load a trained one
   (``teacher.run_id`` / ``teacher.checkpoint``) and score it;
2. student: distill it into ``student.field`` on random poses around the scene,
   in the progressive stages of ``distill.stages``, on the Ray Train path.

A parent run with one child run per stage; the summary reports
``teacher/test/psnr``, ``student/test/psnr`` and the student's metrics unprefixed.
"""

from __future__ import annotations

from pathlib import Path

from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.distill.teacher import fetch_teacher
from fieldkd.platform.errors import InputError
from fieldkd.platform.models import recorded_field
from fieldkd.platform.stages import RunContext, named_field, prefixed, run_stages, stage_config

DEFAULT_TEACHER = "hash"


def field_label(cfg: dict) -> str:
    """``hash→mlp`` in the run's name (``run`` when the teacher comes from another run)."""
    teacher = cfg["teacher"]
    source = teacher["field"] or ("run" if teacher["run_id"] else DEFAULT_TEACHER)
    return f"{source}→{cfg['student']['field']}"


def teacher_stage(ctx: RunContext) -> tuple[dict, TeacherRef | None]:
    """The teacher stage's config, and the trained teacher to load (None: train one)."""
    cfg, teacher = ctx.cfg, ctx.cfg["teacher"]
    if teacher["run_id"] and teacher["checkpoint"]:
        raise InputError("teacher", "give teacher.run_id or teacher.checkpoint, not both")
    if teacher["run_id"]:
        path, field, source = fetch_teacher(teacher["run_id"], ctx.stage_dir("teacher_source"), ctx.run.tracking_uri)
        if teacher["field"] and teacher["field"] != field["name"]:
            raise InputError("teacher.field", f"run {source} holds a {field['name']} field, not {teacher['field']}")
        ctx.run.set_tags({"fieldkd.teacher_run": source})
        return stage_config(cfg, field, teacher["trainer"]), TeacherRef(str(path), field)
    field = named_field(cfg, teacher["field"] or DEFAULT_TEACHER)
    if teacher["checkpoint"]:
        if not Path(teacher["checkpoint"]).is_file():
            raise InputError(teacher["checkpoint"], "teacher checkpoint not found")
        if not teacher["field"]:  # the field the checkpoint records (older ones: the default's)
            field = recorded_field(teacher["checkpoint"]) or field
        return stage_config(cfg, field, teacher["trainer"]), TeacherRef(str(Path(teacher["checkpoint"]).resolve()),
                                                                        field)
    return stage_config(cfg, field, teacher["trainer"]), None


def student_stage(ctx: RunContext) -> dict:
    student = ctx.cfg["student"]
    field = named_field(ctx.cfg, student["field"])
    trainer = dict(student["trainer"])
    if trainer.get("lr") is None:
        trainer["lr"] = student["lr_by_field"].get(field["name"])
    return stage_config(ctx.cfg, field, trainer)


def run(ctx: RunContext) -> dict[str, float]:
    teacher_cfg, loaded = teacher_stage(ctx)
    student_cfg = student_stage(ctx)  # a bad student.field fails now, not after the teacher
    teacher_run = ctx.child("teacher", teacher_cfg)
    if loaded is None:
        request = ctx.request("teacher", teacher_run, teacher_cfg)
    else:
        request = ctx.request("teacher", teacher_run, teacher_cfg, task="evaluate", teacher=loaded)
    taught = run_stages(ctx, [request])["teacher"]
    teacher = TeacherRef(taught.checkpoint, teacher_cfg["field"])

    student_run = ctx.child("student", student_cfg)
    request = ctx.request("student", student_run, student_cfg, task="distill", teacher=teacher)
    learnt = run_stages(ctx, [request], distributed=True)["student"]
    ctx.run.set_tags({"fieldkd.field": f"{teacher_cfg['field']['name']}->{student_cfg['field']['name']}"})
    return {**prefixed(taught.metrics, "teacher"), **prefixed(learnt.metrics, "student"), **learnt.metrics}
