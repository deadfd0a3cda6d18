"""The data stage's lint of the chat format: a warning when a string family's markers are not
the model's own (template_mismatch), run once the job has loaded its tokenizer."""

from __future__ import annotations

from typing import Any

from rlhf.config.tree import options
from rlhf.data.formats import reader, type_options
from rlhf.data.sources import dataset_sources

def family_presets(family: Any) -> list[str]:
    """The shipped model options whose tokenizer writes the family's markers."""
    return [n for n in options("model") if n.startswith(family.model_presets)] if family.model_presets else []


def template_mismatch(run: Any, tokenizer: Any) -> list[str]:
    """A warning per string family (chatml.*, llama3.*, zephyr.*) whose markers the model's
    tokenizer does not use: not written by its chat template nor its EOS/BOS (or, for a tokenizer
    without a chat template, not in its vocabulary). Such a run trains, but the model learns a
    conversation format it will not be prompted with, often with markers split into ordinary
    pieces. A warning, not an error: a user may mean to teach a base model a new format.

    Checked here, in the job right after the tokenizer loads, not in the launching process:
    that covers hub tokenizers (most real models) as well as local ones, with the tokenizer and
    chat template the run really uses (model.tokenizer, model.chat_template applied), at no cost
    (the job loads it anyway). Reading a local tokenizer.json in the launcher would cover only
    local directories and repeat how transformers finds a tokenizer's template and tokens; a
    warning has no need to stop anything before the first job."""
    from rlhf.data.formats.families import FAMILIES

    uses = family_uses(run)
    if not uses:
        return []
    markers = TokenizerMarkers(tokenizer)
    fitting = [f for f in FAMILIES.values() if not markers.missing(f)]
    model = run.model.tokenizer or run.model.name_or_path
    warnings = []
    for name, places in uses.items():
        foreign = markers.missing(FAMILIES[name])
        if foreign:
            warnings.append(mismatch_warning(FAMILIES[name], places, foreign, markers, fitting, model))
    return warnings


def family_uses(run: Any) -> dict[str, dict[str, tuple[str, str]]]:
    """The string families the run's sources are typed with: family -> {where: (mapping, row shape)}."""
    from rlhf.data.formats import type_family
    from rlhf.data.formats.families import FAMILIES

    uses: dict[str, dict[str, tuple[str, str]]] = {}
    for _, where, source in dataset_sources(run.dataset):
        config = source.config
        read = reader(run.spec, unpair=config.unpair)
        family = type_family(read, config.type, **type_options(config))
        if family in FAMILIES:
            mapping = str(config.type).partition(".")[2] or "default"
            uses.setdefault(family, {})[f"{where}.type={config.type}"] = (mapping, read.shape)
    return uses


class TokenizerMarkers:
    """What a tokenizer writes: its chat template (all of them, when it has several named ones),
    its EOS and BOS, and its vocabulary."""

    def __init__(self, tokenizer: Any):
        template = tokenizer.chat_template or ""
        if isinstance(template, dict):  # several named templates
            template = "\n".join(str(t) for t in template.values())
        self.template = template
        self.eos = tokenizer.eos_token
        self.own = {tokenizer.eos_token, tokenizer.bos_token} - {None}
        self.vocab = tokenizer.get_vocab()

    def missing(self, family: Any) -> list[str]:
        """The family's markers this tokenizer does not use."""
        if self.template:
            return [t for t in family.special_tokens if t not in self.template and t not in self.own]
        return [t for t in family.special_tokens if t not in self.vocab]


def mismatch_warning(family: Any, places: dict[str, tuple[str, str]], foreign: list[str],
                     markers: TokenizerMarkers, fitting: list[Any], model: str) -> str:
    """The warning for one family whose `foreign` markers the tokenizer does not use: what is
    missing where, and the ways out (a model that writes them, a named chat template that has
    them, a type in the model's own format)."""
    from rlhf.models.chat_templates import NAMED

    unknown = [t for t in foreign if t not in markers.vocab]
    if markers.template:
        what = (f"{', '.join(foreign)} are missing from the chat template of the tokenizer of {model} "
                f"(its EOS is {markers.eos})"
                + (f", and {', '.join(unknown)} from its vocabulary too (split into ordinary pieces)"
                   if unknown else "")
                + ": the model learns turns in a format it will not be prompted with")
    else:
        what = (f"{', '.join(foreign)} are missing from the vocabulary of the tokenizer of {model} (it has no "
                "chat template): each is split into ordinary pieces")
    fixes = []
    presets = family_presets(family)
    if presets:
        fixes.append(f"model={presets[0]}" + (f" (or {', '.join(presets[1:])})" if presets[1:] else "")
                     + ", whose tokenizer writes them")
    if not unknown and family.name in NAMED:
        fixes.append(f"model.chat_template={family.name} (this tokenizer has these tokens)")
    same = sorted({f"{other.name}.{mapping}" for other in fitting for mapping, shape in places.values()
                   if mapping in other.mappings.get(shape, ())})
    if same:
        fixes.append(f"keep this model with a type in its format ({', '.join(same)})")
    return (f"{', '.join(places)} does not match the model's chat format: {what}. Use "
            + ("; or ".join(fixes) if fixes else "a model whose chat template writes them"))
