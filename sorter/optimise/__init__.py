"""The sort plan optimiser (contract section 11, docs/optimiser.md): the expected flow
(`volumes`), the chute allocation model (`model`, OR-Tools CP-SAT) and the plan it writes
(`plan_out`). Pure: the command in sorterd.optimise_cli reads and writes the files."""

from sorter.optimise.model import (
    Allocation,
    Instance,
    OptimiseError,
    estimate_items,
    instance_from_plan,
    solve,
)
from sorter.optimise.volumes import HOURS, Volumes, load_volumes, parse_volumes

__all__ = [
    "HOURS",
    "Allocation",
    "Instance",
    "OptimiseError",
    "Volumes",
    "estimate_items",
    "instance_from_plan",
    "load_volumes",
    "parse_volumes",
    "solve",
]
