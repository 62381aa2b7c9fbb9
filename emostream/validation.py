"""Validation errors in one line of words, naming each wrong field: for API answers and the CLI."""

import reprlib

from pydantic import ValidationError
from pydantic_core import ErrorDetails

TYPES = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "true or false",
    "list_type": "a list",
}
"""How an error names the JSON type a field wants (pydantic's own words for the rest)."""
SAID = 5
"""Problems named in one error message at most."""


def explain(err: ValidationError) -> str:
    """``epochs must be int, not '3'; sdp is required`` (at most :data:`SAID` problems)."""
    problems = [_problem(error) for error in err.errors()]
    more = f" (and {len(problems) - SAID} more)" if len(problems) > SAID else ""
    return "; ".join(problems[:SAID]) + more


def _problem(error: ErrorDetails) -> str:
    """One validation error in words, naming the field: ``epochs must be int, not '3'``."""
    kind, where, given = error["type"], error["loc"], reprlib.repr(error["input"])
    if kind == "json_invalid":
        return "the body is not valid JSON"
    if not where:
        return "the body must be a JSON object"
    field = str(where[0]) + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where[1:])
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    context = error.get("ctx", {})
    if kind == "value_error":
        expected = str(context["error"])
    elif kind == "literal_error":
        expected = f"one of {context['expected']}" if " or " in context["expected"] else context["expected"]
    elif kind in TYPES:
        expected = TYPES[kind]
    elif error["msg"].startswith("Input should be "):
        expected = error["msg"].removeprefix("Input should be ")
    else:  # e.g. "List should have at least 4 items after validation, not 3"
        return f"{field}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    return f"{field} must be {expected}, not {given}"
