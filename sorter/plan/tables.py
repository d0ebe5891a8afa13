"""What every plan table's validation shares: the strict model base and the problem list."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sorter.config import Problem, validation_problems
from sorter.plan.records import MAX_MEASURE

__all__ = ["Measure", "Problems", "TableModel"]


class TableModel(BaseModel):
    """One plan table: unknown keys are typos (`extra="forbid"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Measure = Annotated[int, Field(ge=1, le=MAX_MEASURE)]

_M = TypeVar("_M", bound=BaseModel)


class Problems:
    """The problems found in one plan file, in the order they are found, each with its key."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        self.found.append(Problem(self.file, key, message))

    def section(self, model: type[_M], data: Any, prefix: str) -> _M | None:
        """Validate one part of the plan, so a typo in one rule hides nothing elsewhere."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.found.extend(validation_problems(self.file, exc, prefix))
            return None

    def each(self, model: type[_M], items: list[Any], name: str) -> list[_M | None]:
        """An array of tables (`[[name]]`), each validated on its own; None where it is
        not a table (the top level's check reports that) or does not validate."""
        return [
            self.section(model, item, f"{name}[{i}]") if isinstance(item, dict) else None
            for i, item in enumerate(items)
        ]
