"""`user_defined.default`: the user's own field names and format strings are the whole template.

Placeholders are `{prompt}`, `{system}` and `{chosen}` / `{rejected}` (pairs) or
`{completion}` (KTO), whatever the fields are called; `{{` and `}}` are literal braces; a
missing or empty system fills `{system}` with "". Anything else in braces is an error that
names the placeholder and the format it is in, before any row is read.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from rlhf.data.formats.base import Fields, as_label
from rlhf.core.errors import ConfigError, did_you_mean, one_of

PAIR_KEYS = {"field_prompt": "prompt", "field_system": "system", "field_chosen": "chosen",
             "field_rejected": "rejected", "prompt_format": "{prompt}", "chosen_format": "{chosen}",
             "rejected_format": "{rejected}"}
UNPAIRED_KEYS = {"field_prompt": "prompt", "field_system": "system", "field_completion": "completion",
                 "field_label": "label", "prompt_format": "{prompt}", "completion_format": "{completion}"}


def _settings(spec: Mapping | None, defaults: dict[str, str]) -> dict[str, str]:
    spec = dict(spec or {})
    spec.pop("type", None)  # `type: user_defined.default` written inside the mapping
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        key = unknown[0]
        raise ConfigError(f"user_defined type: unknown key {key!r}{did_you_mean(key, defaults)}; valid keys: "
                          f"{one_of(defaults)}")
    settings = {**defaults, **{k: v for k, v in spec.items() if v is not None}}
    for key, value in settings.items():
        if not isinstance(value, str):
            raise ConfigError(f"user_defined type: {key} must be text, got {value!r}")
    return settings


def _check_format(name: str, text: str, allowed: tuple[str, ...]) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:
        raise ConfigError(f"user_defined type: {name} {text!r} is not a valid format ({error}); write literal "
                          "braces as {{ and }}") from None
    for _, placeholder, spec, conversion in parsed:
        if placeholder is None:
            continue
        if placeholder not in allowed or spec or conversion:
            shown = "{" + placeholder + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"user_defined type: {name} {text!r} has the placeholder {shown}; the placeholders "
                              f"are {', '.join('{' + a + '}' for a in allowed)} (write literal braces as {{{{ }}}})")


def _values(fields: Fields, settings: dict[str, str], answers: dict[str, str]) -> dict[str, str]:
    values = {"prompt": fields.text(settings["field_prompt"]),
              "system": fields.system(settings["field_system"]) or ""}
    for placeholder, key in answers.items():
        values[placeholder] = fields.text(settings[key], answer=True)
    return values


def pairs(spec: Mapping | None):
    settings = _settings(spec, PAIR_KEYS)
    allowed = ("prompt", "system", "chosen", "rejected")
    for key in ("prompt_format", "chosen_format", "rejected_format"):
        _check_format(key, settings[key], allowed)
    required = (settings["field_prompt"], settings["field_chosen"], settings["field_rejected"])

    def extract(fields: Fields) -> dict[str, Any]:
        values = _values(fields, settings, {"chosen": "field_chosen", "rejected": "field_rejected"})
        return {"prompt": settings["prompt_format"].format(**values),
                "chosen": settings["chosen_format"].format(**values),
                "rejected": settings["rejected_format"].format(**values)}

    return required, (settings["field_system"],), extract


def unpaired(spec: Mapping | None):
    settings = _settings(spec, UNPAIRED_KEYS)
    allowed = ("prompt", "system", "completion")
    for key in ("prompt_format", "completion_format"):
        _check_format(key, settings[key], allowed)
    required = (settings["field_prompt"], settings["field_completion"], settings["field_label"])

    def extract(fields: Fields) -> dict[str, Any]:
        values = _values(fields, settings, {"completion": "field_completion"})
        return {"prompt": settings["prompt_format"].format(**values),
                "completion": settings["completion_format"].format(**values),
                "label": as_label(fields.value(settings["field_label"]), settings["field_label"])}

    return required, (settings["field_system"],), extract
