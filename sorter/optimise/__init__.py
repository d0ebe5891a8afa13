"""The sort plan optimiser (contract section 11, docs/optimiser.md): the expected flow
(`volumes`), the chute allocation model (`model`, OR-Tools CP-SAT) and the plan it writes
(`plan_out`). Pure: the command in sorterd.optimise_cli reads and writes the files."""

from sorter.optimise.instance import (
    NO_ZONE,
    Instance,
    OptimiseError,
    estimate_capacity,
    estimate_items,
    estimate_of,
    instance_from_plan,
)
from sorter.optimise.model import Allocation, Weights, solve, zone_load
from sorter.optimise.volumes import HOURS, Volumes, load_volumes, parse_volumes

__all__ = [
    "HOURS",
    "NO_ZONE",
    "Allocation",
    "Instance",
    "OptimiseError",
    "Volumes",
    "Weights",
    "estimate_capacity",
    "estimate_items",
    "estimate_of",
    "instance_from_plan",
    "load_volumes",
    "parse_volumes",
    "solve",
    "zone_load",
]
