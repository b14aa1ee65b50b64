"""The JSON Schema of a scenario file, for editors (`harness schema`): the model's own, with the shorthands."""

from __future__ import annotations

from harness.scenario.schema import STEP_PARAMS, STEP_TYPES, GuestFile, ScenarioFile
from harness.scenario.step_params import SelftestEntry
from harness.validation import Strict


def scenario_json_schema() -> dict:
    """JSON Schema of a scenario file, shorthands included (`- snapshot`, `balloon: 1G`)."""
    schema = ScenarioFile.model_json_schema()
    defs = schema["$defs"]
    with_shorthands: list[type[Strict]] = [*STEP_PARAMS.values(), GuestFile, SelftestEntry]
    for model in with_shorthands:
        own = defs[model.__name__]
        forms = [own]
        if model.shorthand is not None:
            forms.append(own["properties"][model.shorthand])
        if not own.get("required"):
            forms.append({"type": "null"})
        defs[model.__name__] = {"anyOf": forms} if len(forms) > 1 else own
    defs["BootParams"] = {"type": "null"}
    # zeroing_paths: {memtouch: ...} is the shorthand of zeroing_paths: {step: {memtouch: ...}}
    defs["ZeroingPathsParams"] = {"anyOf": [defs["ZeroingPathsParams"], {"$ref": "#/$defs/StepEntry"}]}
    entry = schema["properties"]["steps"]["items"]
    schema["properties"]["steps"]["items"] = {"anyOf": [{"enum": list(STEP_TYPES)}, entry]}
    return schema
