"""ComfyUI 0.3.64's prompt validation (execution.validate_prompt / validate_inputs), as the
test double needs it: the same checks, in the same order, with the same error bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

INNER_VALIDATION_TRACEBACK = [
    '  File "/srv/ComfyUI/execution.py", line 808, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n',
    "  File \"/srv/ComfyUI/execution.py\", line 788, in validate_inputs\n    o_class_type = prompt[o_id]['class_type']\n                   ~~~~~~^^^^^^\n",
]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def error_body(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


def input_specs(cls_info: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    out = []
    for category in ("required", "optional"):
        for name, spec in cls_info["input"].get(category, {}).items():
            out.append((category, name, spec))
    return out


def combo_options(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1:
        return spec[1].get("options", [])
    return None


def validate_prompt(
    prompt: dict[str, Any],
    info: dict[str, Any],
    input_exists: Callable[[str], bool] | None = None,
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """``input_exists`` plays LoadImage.VALIDATE_INPUTS: a file in an input subfolder is
    accepted although the ``image`` list shows only the top level."""
    outputs: list[str] = []
    for nid, node in prompt.items():
        if "class_type" not in node:
            return (
                False,
                error_body(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{nid}'",
                )["error"],
                [],
                {},
            )
        cls = node["class_type"]
        if cls not in info:
            return (
                False,
                error_body(
                    "invalid_prompt",
                    f"Cannot execute because node {cls} does not exist.",
                    f"Node ID '#{nid}'",
                )["error"],
                [],
                {},
            )
        if info[cls].get("output_node"):
            outputs.append(nid)
    if not outputs:
        return False, error_body("prompt_no_outputs", "Prompt has no outputs")["error"], [], {}
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    good: list[str] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        try:
            valid = (
                validate_inputs(prompt, out, validated, info, input_exists)
                if out not in validated
                else validated[out][0]
            )
        except Exception as ex:  # noqa: BLE001 (mirrors ComfyUI's catch-all)
            valid = False
            validated[out] = (False, [{"type": "exception_during_validation", "message": "Exception when validating node", "details": str(ex), "extra_info": {}}])  # fmt: skip
        if valid:
            good.append(out)
            continue
        for nid, (ok, reasons) in validated.items():
            if ok or not reasons:
                continue
            entry = node_errors.setdefault(
                nid,
                {
                    "errors": reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[nid]["class_type"],
                },
            )
            entry["dependent_outputs"].append(out)
    if not good:
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        }
        return False, error, [], node_errors
    return True, None, good, node_errors


def validate_inputs(
    prompt: dict[str, Any],
    nid: str,
    validated: dict[str, Any],
    info: dict[str, Any],
    input_exists: Callable[[str], bool] | None = None,
) -> bool:
    node = prompt[nid]
    inputs = node["inputs"]
    cls_info = info[node["class_type"]]
    errors: list[dict[str, Any]] = []
    valid = True
    for category, name, spec in input_specs(cls_info):
        if name not in inputs:
            if category == "required":
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})  # fmt: skip
            continue
        val = inputs[name]
        type_input = spec[0]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append({"type": "bad_linked_input",
                               "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                               "details": name,
                               "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
                continue
            o_id = str(val[0])
            o_class = prompt[o_id]["class_type"]  # KeyError here propagates to the caller
            received = info[o_class]["output"][val[1]]
            if not isinstance(type_input, list) and type_input not in ("*", received):
                errors.append({"type": "return_type_mismatch",
                               "message": "Return type mismatch between linked nodes",
                               "details": f"{name}, received_type({received}) mismatch input_type({type_input})",
                               "extra_info": {"input_name": name, "input_config": spec,
                                              "received_type": received, "linked_node": val}})  # fmt: skip
                continue
            try:
                if o_id not in validated:
                    ok = validate_inputs(prompt, o_id, validated, info, input_exists)
                    valid = valid and ok
                elif not validated[o_id][0]:
                    valid = False
            except Exception as ex:  # noqa: BLE001
                valid = False
                reasons = [{"type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {"input_name": name, "input_config": spec,
                                           "exception_message": str(ex),
                                           "exception_type": type(ex).__name__,
                                           "traceback": INNER_VALIDATION_TRACEBACK,
                                           "linked_node": val}}]  # fmt: skip
                validated[o_id] = (False, reasons)
            continue
        options = combo_options(spec)
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        try:
            if type_input == "INT":
                val = int(val)
            elif type_input == "FLOAT":
                val = float(val)
            elif type_input == "STRING":
                val = str(val)
        except (TypeError, ValueError) as ex:
            errors.append({"type": "invalid_input_type",
                           "message": f"Failed to convert an input value to a {type_input} value",
                           "details": f"{name}, {val}, {ex}",
                           "extra_info": {"input_name": name, "input_config": spec,
                                          "received_value": val, "exception_message": str(ex)}})  # fmt: skip
            continue
        if "min" in opts and type_input in ("INT", "FLOAT") and val < opts["min"]:
            errors.append({"type": "value_smaller_than_min",
                           "message": f"Value {val} smaller than min of {opts['min']}",
                           "details": name,
                           "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
            continue
        if "max" in opts and type_input in ("INT", "FLOAT") and val > opts["max"]:
            errors.append({"type": "value_bigger_than_max",
                           "message": f"Value {val} bigger than max of {opts['max']}",
                           "details": name,
                           "extra_info": {"input_name": name, "input_config": spec, "received_value": val}})  # fmt: skip
            continue
        if node["class_type"] == "LoadImage" and name == "image" and input_exists is not None:
            if not input_exists(str(val)):
                errors.append({"type": "custom_validation_failed",
                               "message": "Custom validation failed for node",
                               "details": f"image - Invalid image file: {val}",
                               "extra_info": {"input_name": name}})  # fmt: skip
            continue
        if options is not None and val not in options:
            if len(options) > 20:
                list_info, config = f"(list of length {len(options)})", None
            else:
                list_info, config = str(options), spec
            errors.append({"type": "value_not_in_list", "message": "Value not in list",
                           "details": f"{name}: '{val}' not in {list_info}",
                           "extra_info": {"input_name": name, "input_config": config,
                                          "received_value": val}})  # fmt: skip
            continue
    if errors or not valid:
        validated[nid] = (False, errors)
        return False
    validated[nid] = (True, [])
    return True
