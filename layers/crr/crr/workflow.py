"""What the state machines hand their Lambda steps when something failed (a Catch's ResultPath)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field


class StepError(BaseModel):
    """The error a Catch puts at its ResultPath: the error's name and its cause (Lambda's error JSON for a
    function's exception, else text)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    error: str = Field(default="", alias="Error")
    cause: str = Field(default="", alias="Cause")

    @property
    def message(self) -> str:
        """The cause's own message: a function error's ``errorMessage``, else the cause as it is."""
        try:
            found = json.loads(self.cause)
        except ValueError:
            return self.cause
        if isinstance(found, dict) and isinstance(found.get("errorMessage"), str):
            return str(found["errorMessage"])
        return self.cause
