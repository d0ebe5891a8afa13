"""Sort plans (docs/interfaces.md section 6): load, validate against the machine, compile.

A plan maps item attributes to a destination with ordered rules (the first match wins),
then a destination to chutes. `SortPlan` keeps the checked plan as Python objects, which
the reference decision uses; `CompiledPlan` holds the same plan as flat numpy arrays for
the numba kernel. Loading reads the file (the one place here that does I/O).

One module per table, each validating its table and naming file, key and value in its
problems: `machine` ([machine]: chutes and limits), `functions` ([functions], [options]),
`destinations` ([[destination]]), `size_classes` ([[size_class]]), `rules` ([[rule]]) and
`rule_lint` (its warnings); `load` reads the file and the top level, `compiled` builds
the kernel's arrays, `records` holds the checked plan's types.
"""

from sorter.plan.compiled import CompiledPlan, compile_plan
from sorter.plan.load import build_plan, load_plan
from sorter.plan.machine import parse_chute_list
from sorter.plan.records import (
    ALPHA2,
    CLASS_LIMITS,
    MAX_CHUTE_NUMBER,
    MAX_MEASURE,
    MAX_REGEX_RULES,
    MAX_SIZE_CLASSES,
    MEASURES,
    PLAN_VERSION,
    Destination,
    LetterSet,
    MachineLimits,
    Rule,
    SizeClass,
    SortPlan,
    letters_index,
)
from sorter.plan.rules import parse_letter_set

__all__ = [
    "ALPHA2",
    "CLASS_LIMITS",
    "MAX_CHUTE_NUMBER",
    "MAX_MEASURE",
    "MAX_REGEX_RULES",
    "MAX_SIZE_CLASSES",
    "MEASURES",
    "PLAN_VERSION",
    "CompiledPlan",
    "Destination",
    "LetterSet",
    "MachineLimits",
    "Rule",
    "SizeClass",
    "SortPlan",
    "build_plan",
    "compile_plan",
    "letters_index",
    "load_plan",
    "parse_chute_list",
    "parse_letter_set",
]
