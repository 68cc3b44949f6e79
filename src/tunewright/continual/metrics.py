"""The accounting of a task sequence: the accuracy matrix R and the numbers read from it.

R has one row per trained task and one column per evaluated task (T tasks, indexed from 0):

    R[i][j]   the score on task j after training tasks 0..i, in order
    b[j]      the score on task j before any training (the zero-shot row)

From Lopez-Paz & Ranzato (2017), "Gradient Episodic Memory for Continual Learning" (NeurIPS), §4:

    average accuracy   ACC = 1/T · Σ_j R[T-1][j]
    backward transfer  BWT = 1/(T-1) · Σ_{j<T-1} (R[T-1][j] − R[j][j])     negative: forgetting
    forward transfer   FWT = 1/(T-1) · Σ_{j≥1}   (R[j-1][j] − b[j])        what earlier tasks give a
                                                                            task not trained yet

From Chaudhry et al. (2018), "Riemannian Walk for Incremental Learning" (ECCV), eq. 2, forgetting of
task j after the last task, the largest drop from any earlier point of the sequence:

    f[j] = max_{l ∈ 0..T-2} R[l][j] − R[T-1][j]                        for j < T-1
    forgetting F = 1/(T-1) · Σ_{j<T-1} f[j]

As in the paper, l runs over every earlier row, including rows before task j was trained (where
R[l][j] is a forward-transfer score); with a zero-shot score above the trained one f[j] counts that
drop too. Scores are in the units the evaluation gives (accuracy in [0, 1]); nothing is rescaled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Transfer", "transfer", "average_accuracy", "backward_transfer", "forward_transfer", "forgetting"]


def _square(R: list[list[float]]) -> int:
    T = len(R)
    if T < 2 or any(len(row) != T for row in R):
        raise ValueError(f"R must be a T x T matrix with T >= 2 (one row per trained task, one column per task); "
                         f"got rows of lengths {[len(row) for row in R]}")
    return T


def average_accuracy(R: list[list[float]]) -> float:
    """ACC = 1/T · Σ_j R[T-1][j]: the mean score over all tasks after the last one."""
    T = _square(R)
    return sum(R[T - 1]) / T


def backward_transfer(R: list[list[float]]) -> float:
    """BWT = 1/(T-1) · Σ_{j<T-1} (R[T-1][j] − R[j][j]): negative when later tasks erased earlier ones."""
    T = _square(R)
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R: list[list[float]], zero_shot: list[float]) -> float:
    """FWT = 1/(T-1) · Σ_{j≥1} (R[j-1][j] − b[j]), b the zero-shot row: how much training on the
    earlier tasks helped (or hurt) a task before it is trained."""
    T = _square(R)
    if len(zero_shot) != T:
        raise ValueError(f"the zero-shot row has {len(zero_shot)} scores for {T} tasks")
    return sum(R[j - 1][j] - zero_shot[j] for j in range(1, T)) / (T - 1)


def forgetting(R: list[list[float]]) -> tuple[float, list[float]]:
    """(F, [f[0] .. f[T-2]]): f[j] = max_{l ≤ T-2} R[l][j] − R[T-1][j], F their mean (Chaudhry et al.)."""
    T = _square(R)
    per_task = [max(R[l][j] for l in range(T - 1)) - R[T - 1][j] for j in range(T - 1)]
    return sum(per_task) / (T - 1), per_task


@dataclass(frozen=True)
class Transfer:
    """Every number of one strategy's sequence, as results.json holds them."""

    average_accuracy: float
    backward_transfer: float
    forward_transfer: float
    forgetting: float
    forgetting_per_task: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def transfer(R: list[list[float]], zero_shot: list[float]) -> Transfer:
    """All of the above for one matrix R and its zero-shot row."""
    F, per_task = forgetting(R)
    return Transfer(average_accuracy(R), backward_transfer(R), forward_transfer(R, zero_shot), F, per_task)
