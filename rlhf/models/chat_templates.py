"""Named chat templates for `model.chat_template`, and resolving the setting to a template.

`chatml` and `llama3` render exactly what the `chatml.*` and `llama3.*` dataset types write
(no default system prompt, no date header, no BOS: the tokenizer adds it).
"""

from __future__ import annotations

from pathlib import Path

from rlhf.core.errors import ConfigError, one_of

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
NAMED = {"chatml": CHATML, "llama3": LLAMA3}


def resolve_chat_template(value: str) -> str:
    """A built-in name, a path to a .jinja file, or a template written out."""
    if value in NAMED:
        return NAMED[value]
    if "{%" in value or "{{" in value:
        return value
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"model.chat_template={value!r} is not a built-in template ({one_of(NAMED)}), an existing "
                      ".jinja file, or a template (one with {{ or {%)")
