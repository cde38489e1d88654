"""Meta knowledge distillation on Omniglot: size, CPU speed and test accuracy of a teacher and its students.

For each checkpoint (the teacher, a student trained without distillation, the same student trained
with it, the same number of meta-training steps): the parameters used to adapt and predict (a
distilled student's feature projection is dropped after training, so not counted), the seconds to
adapt to one N-way 1-shot task and predict its queries on one CPU thread (median over tasks), and
the accuracy on the test tasks of ``configs/omniglot/base.yaml`` (same tasks for all; mean and 95% CI).

    .venv/bin/python benchmarks/distillation_omniglot.py --data_dir ../shared/data/omniglot --ways 20 \
        --teacher T.ckpt --student S.ckpt --distilled D.ckpt [--tasks 600] [--timing_tasks 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

from datamodules import OmniglotDataModule
from lit_meta.algorithms import MetaDistillation, MetaLearner
from lit_meta.algorithms.checkpoints import load_learner
from lit_meta.evaluation import evaluation_mode
from lit_meta.functional import mean_ci95, task_accuracies
from lit_meta.tasks import Task


def inference_parameters(learner: MetaLearner) -> int:
    """Parameters that adaptation and prediction use."""
    used = learner.student if isinstance(learner, MetaDistillation) else learner
    return sum(p.numel() for p in used.parameters())


def evaluate(learner: MetaLearner, tasks: list, timing_tasks: int) -> tuple[float, float, float]:
    """``(accuracy, ci95, median seconds per task)`` over ``tasks``; the first ``timing_tasks`` are timed."""
    accuracies, seconds = [], []
    with evaluation_mode(learner):
        for i, task in enumerate(tqdm(tasks, desc=type(learner).__name__, leave=False)):
            start = time.perf_counter()
            logits = learner.evaluate_episode(task)
            if i < timing_tasks:
                seconds.append(time.perf_counter() - start)
            accuracies.append(task_accuracies(logits, task.query_y))
    mean, ci95 = mean_ci95(torch.cat(accuracies))
    return mean, ci95, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/omniglot")
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--timing_tasks", type=int, default=50)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="the student trained without distillation")
    parser.add_argument("--distilled", required=True, help="the same student trained with distillation")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = OmniglotDataModule(
        data_dir=args.data_dir,
        split="minimal",
        download=False,
        eval_ways=args.ways,
        eval_shots=1,
        eval_queries=15,
        test_tasks=args.tasks,
    )
    data.setup("test")
    # One task at a time, as a user adapts: the loader's meta-batches split into single tasks.
    tasks = [Task(*(t[i : i + 1] for t in batch)) for batch in data.test_dataloader() for i in range(batch.num_tasks)]
    rows = []
    for name, path in (("teacher", args.teacher), ("student", args.student), ("distilled", args.distilled)):
        learner, _ = load_learner(path)
        mean, ci95, seconds = evaluate(learner, tasks, args.timing_tasks)
        rows.append((name, inference_parameters(learner), seconds, mean, ci95))

    teacher_params, teacher_seconds, teacher_acc = rows[0][1], rows[0][2], rows[0][3]
    print(f"Omniglot minimal, {args.ways}-way 1-shot, {len(tasks)} test tasks, one CPU thread")
    print("| model | parameters | x fewer | s per task (adapt + predict) | x faster | test accuracy |")
    print("|---|---|---|---|---|---|")
    for name, params, seconds, mean, ci95 in rows:
        print(
            f"| {name} | {params:,} | {teacher_params / params:.1f} | {seconds * 1e3:.1f} ms | "
            f"{teacher_seconds / seconds:.1f} | {100 * mean:.2f}% ± {100 * ci95:.2f} |"
        )
    plain, distilled = rows[1][3], rows[2][3]
    gap = teacher_acc - plain
    closed = (distilled - plain) / gap if gap > 0 else float("nan")
    print(
        f"distillation: {100 * (distilled - plain):+.2f} points; closes {100 * closed:.0f}% of the teacher-student gap"
    )


if __name__ == "__main__":
    main()
