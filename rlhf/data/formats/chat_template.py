"""`chat_template.*`: the model's own chat template renders the conversation.

The prompt is the conversation rendered with the generation prompt; an answer is what
rendering the conversation plus the assistant's answer adds after that prompt. We cut at the
rendered prompt's length (Axolotl searches for the answer text, which breaks when the answer
also appears earlier or is empty), so a template that renders the prompt differently once an
answer follows is an error rather than a silently wrong row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf.data.formats.base import Fields, RowError
from rlhf.core.errors import ConfigError, one_of

DEFAULT_ROLES = {"user": ["user"], "assistant": ["assistant"], "system": ["system"], "tool": ["tool"]}
DEFAULT_PROPERTIES = {"role": "role", "content": "content"}
OPTIONS = ("field_messages", "field_chosen", "field_rejected", "message_property_mappings", "roles")


class Template:
    """Renders messages with a tokenizer's chat template and cuts answers off the prompt."""

    def __init__(self, tokenizer: Any, type_name: str, options: dict[str, Any]):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"dataset type {type_name} renders rows with the model's chat template, but "
                              + ("no tokenizer was given" if tokenizer is None else "the tokenizer has none")
                              + ": set model.chat_template (chatml, llama3, a .jinja file or a template)")
        self.tokenizer = tokenizer
        self.type_name = type_name
        properties = options.get("message_property_mappings") or DEFAULT_PROPERTIES
        unknown = set(properties) - set(DEFAULT_PROPERTIES)
        if unknown:
            raise ConfigError(f"message_property_mappings of {type_name} has {one_of(sorted(unknown))}; it maps "
                              "role and content to the keys your messages use")
        self.role_key = properties.get("role", "role")
        self.content_key = properties.get("content", "content")
        roles = options.get("roles") or DEFAULT_ROLES  # a given map replaces the default one
        self.role_of = {}
        for target, sources in roles.items():
            for source in [sources] if isinstance(sources, str) else sources:
                self.role_of[str(source)] = str(target)

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=generation_prompt)
        except Exception as error:  # the template raised (jinja): a row the template refuses
            raise RowError(f"the chat template cannot render this conversation: {error}") from None

    def message(self, fields: Fields, name: str, message: Any, index: int) -> dict:
        if not isinstance(message, Mapping):
            raise RowError(f"field {name!r} message {index + 1} is {type(message).__name__}, not a message "
                           "object", field=name)
        if self.role_key not in message:
            raise RowError(f"field {name!r} message {index + 1} has no {self.role_key!r} key (it has "
                           f"{', '.join(sorted(map(str, message)))}); see message_property_mappings", field=name)
        source = message[self.role_key]
        if source not in self.role_of:
            raise RowError(f"field {name!r} message {index + 1} has the role {source!r}, which the roles map "
                           f"does not know; known roles: {one_of(sorted(self.role_of))}", field=name)
        if self.content_key not in message:
            raise RowError(f"field {name!r} message {index + 1} has no {self.content_key!r} key", field=name)
        content = fields.text(name, value=message[self.content_key],
                              where=f"field {name!r} message {index + 1} content")
        return {"role": self.role_of[source], "content": content}

    def conversation(self, fields: Fields, name: str, value: Any) -> list[dict]:
        if isinstance(value, str):  # a string is one user turn
            return [{"role": "user", "content": value}]
        messages = fields.messages(name, value)
        return [self.message(fields, name, m, i) for i, m in enumerate(messages)]

    def answer_message(self, fields: Fields, name: str) -> dict:
        """chosen / rejected: a string (the assistant's text), one message, or a list (its last)."""
        value = fields.value(name)
        if isinstance(value, str):
            content = fields.text(name, answer=True)
        else:
            if isinstance(value, (list, tuple)):
                if not value:
                    raise RowError(f"field {name!r} is an empty list; it needs the assistant's answer", field=name,
                                   empty=True)
                value = value[-1]
            message = self.message(fields, name, value, 0)
            content = fields.text(name, answer=True, value=message["content"], where=f"field {name!r} content")
        return {"role": "assistant", "content": content}

    def cut(self, prompt: str, history: list[dict], answer: dict, strip: bool) -> str:
        full = self.render(history + [answer], generation_prompt=False)
        if not full.startswith(prompt):
            raise RowError("the chat template renders the conversation differently once an answer follows, so the "
                           "answer cannot be cut from it; use a template whose generation prompt is a prefix of the "
                           "rendered answer turn")
        added = full[len(prompt):]
        return added.rstrip() if strip else added


def default(tokenizer: Any, type_name: str, options: dict[str, Any]):
    template = Template(tokenizer, type_name, options)
    field_messages = options.get("field_messages") or "messages"
    field_chosen = options.get("field_chosen") or "chosen"
    field_rejected = options.get("field_rejected") or "rejected"

    def extract(fields: Fields) -> dict:
        history = template.conversation(fields, field_messages, fields.value(field_messages))
        prompt = template.render(history, generation_prompt=True)
        return {"prompt": prompt,
                "chosen": template.cut(prompt, history, template.answer_message(fields, field_chosen), strip=True),
                "rejected": template.cut(prompt, history, template.answer_message(fields, field_rejected),
                                         strip=True)}

    return (field_messages, field_chosen, field_rejected), extract


def argilla_chat(tokenizer: Any, type_name: str, options: dict[str, Any]):
    template = Template(tokenizer, type_name, options)
    field_chosen = options.get("field_chosen") or "chosen"
    field_rejected = options.get("field_rejected") or "rejected"

    def extract(fields: Fields) -> dict:
        chosen = template.conversation(fields, field_chosen, fields.messages(field_chosen))
        rejected = template.conversation(fields, field_rejected, fields.messages(field_rejected))
        for name, messages in ((field_chosen, chosen), (field_rejected, rejected)):
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise RowError(f"field {name!r} must end with the assistant's answer after at least one user "
                               "message", field=name)
        history = chosen[:-1]
        prompt = template.render(history, generation_prompt=True)
        for name, messages in ((field_chosen, chosen), (field_rejected, rejected)):
            fields.text(name, answer=True, value=messages[-1]["content"], where=f"field {name!r} last message")
        return {"prompt": prompt, "chosen": template.cut(prompt, history, chosen[-1], strip=True),
                "rejected": template.cut(prompt, history, rejected[-1], strip=True)}

    return (field_chosen, field_rejected), extract


def orpo_argilla(tokenizer: Any, type_name: str, options: dict[str, Any]):
    """ORPO's chat_template.argilla: even-length chosen / rejected conversations; the answer keeps
    the template's trailing newline (ChatML: C + "<|im_end|>\\n"), as Axolotl's does."""
    template = Template(tokenizer, type_name, options)

    def extract(fields: Fields) -> dict:
        chosen = template.conversation(fields, "chosen", fields.messages("chosen"))
        rejected = template.conversation(fields, "rejected", fields.messages("rejected"))
        for name, messages in (("chosen", chosen), ("rejected", rejected)):
            if not messages or len(messages) % 2:
                raise RowError(f"field {name!r} has {len(messages)} message(s); chat_template.argilla needs "
                               "user/assistant turns (an even number, ending with the assistant)", field=name)
            if messages[-1]["role"] != "assistant":
                raise RowError(f"field {name!r} must end with the assistant's answer", field=name)
            fields.text(name, answer=True, value=messages[-1]["content"], where=f"field {name!r} last message")
        system = fields.system()
        history = [{"role": "system", "content": system}] if system is not None else []
        if fields.row.get("prompt") is not None:
            history.append({"role": "user", "content": fields.text("prompt")})
        else:
            history += chosen[:-1]
        prompt = template.render(history, generation_prompt=True)
        return {"prompt": prompt, "chosen": template.cut(prompt, history, chosen[-1], strip=False),
                "rejected": template.cut(prompt, history, rejected[-1], strip=False)}

    return ("chosen", "rejected"), extract
