"""The ids a method's TRL trainer trains on, made once, in the data stage.

Each preference trainer of TRL tokenizes its dataset before training, one row at a time in one
process: DPOTrainer and KTOTrainer in `_prepare_dataset`, RewardTrainer likewise (it skips the
work for rows that already hold `chosen_ids` and `rejected_ids`), ORPOTrainer and CPOTrainer
with `tokenize_row` in their constructor. The data stage tokenized the same texts already, for
the length rule. Here it makes exactly the columns the trainer makes, in batches and on every
core (rlhf.data.workers), the length rule reads their lengths, and the trainer takes them as
they are: one tokenization pass instead of two.

    encoding(MethodSpec, tokenizer, max_length)(rows) -> Encoded
    trainer_class(TRL's trainer class, MethodSpec.tokenized) -> the class the runner builds

`ENCODINGS` holds one Encoding class per kind of MethodSpec.tokenized: the columns it makes,
how it makes them, and which adapter (rlhf.trl.pretokenized) keeps its trainer from making them
again.

Every encoding calls the tokenizer as TRL does, with the same arguments: a text row through
`tokenizer(text=...)`, a conversation through `apply_chat_template(..., tokenize=True)`
(batched, which transformers runs row by row the same way), the EOS token appended to an answer
that lacks it when the first row is text, the prompt cut where the tokenized prompt and
prompt+answer diverge (TRL's public `common_prefix_length`). ORPO's and CPO's row tokenizer is
TRL's own `tokenize_row`, called on each row. tests/test_tokenize_once.py holds every encoding
to the trainer's own output, on the embedded data and on every type's sample.

The methods that generate (GRPO, RLOO, Online DPO) tokenize their prompts as they sample;
for them only the prompt lengths are measured here, as their trainer tokenizes them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from rlhf.data.formats.base import kind_of
from rlhf.methods.base import PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS, PROMPTS, SEQUENCE_PAIR_IDS, TOKENIZE_ROW_IDS
from rlhf.trl import pretokenized
from rlhf.trl.tokenize_row import row_tokenizer

# A length limit no sequence reaches: ORPO's and CPO's tokenize_row with it cuts nothing.
NO_LIMIT = 2**62


class RowIssue(Exception):
    """A formatted row that cannot be tokenized as the trainer would: `index` in the batch."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


@dataclass
class Encoded:
    """The encoding of a batch of rows."""

    columns: dict[str, list[list[int]]]  # the trainer's id columns
    lengths: list[int]  # tokens of the longest sequence the trainer builds from each row
    # Tokens of each row's prompt as the trainer keeps it (None: the trainer has no such rule).
    prompt_lengths: list[int] | None = None
    # Rows whose tokenized prompt is not a prefix of prompt + answer (TRL warns once).
    diverged: int = 0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- tokenizer calls


def stock_backend(tokenizer: Any) -> Any:
    """The Rust tokenizer behind `tokenizer` when calling it is nothing but that tokenizer's
    `encode_batch` (transformers' own fast tokenizer class, no override): None otherwise."""
    from transformers import PreTrainedTokenizerFast

    cls = type(tokenizer)
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or hasattr(tokenizer, "_switch_to_input_mode"):
        return None
    stock = PreTrainedTokenizerFast
    if cls.__call__ is not stock.__call__ or cls._encode_plus is not stock._encode_plus:
        return None
    return tokenizer.backend_tokenizer


class TextIds:
    """`tokenizer(text=text)["input_ids"]` for each text: the call TRL makes on a text row,
    made for a whole batch. For transformers' own fast tokenizer the Rust tokenizer is called
    directly (the same `encode_batch` the call makes, without building attention masks in
    Python), once a sample of the first batch gave the same ids both ways."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.backend = stock_backend(tokenizer)
        self.checked = False

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.backend is not None:
            # A call through the tokenizer first sets the Rust tokenizer as every call does (no
            # truncation, no padding, special tokens kept whole).
            sample = self.tokenizer(text=texts[:8])["input_ids"]
            if not self.checked:
                self.checked = True
                if [e.ids for e in self.backend.encode_batch(texts[:8])] != sample:
                    self.backend = None
        if self.backend is None:
            return self.tokenizer(text=texts)["input_ids"]
        return [e.ids for e in self.backend.encode_batch(texts)]


# Pre-tokenizers, models and post-processors (tokenizer.json types) that treat each piece of
# text between added tokens alike wherever it stands, and wrap the whole in constant tokens.
PIECEWISE_PRE_TOKENIZERS = {"ByteLevel", "Whitespace", "WhitespaceSplit", "BertPreTokenizer", "Punctuation", "Digits",
                            "Split", "UnicodeScripts", "CharDelimiterSplit", "Metaspace", "Sequence"}
PIECEWISE_MODELS = {"BPE", "WordPiece", "WordLevel", "Unigram"}
WRAPPING_POST_PROCESSORS = {"TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence"}
# Rows of each process checked against the whole tokenization before PromptPieces is trusted.
PIECES_CHECKED_ROWS = 32


def piecewise_problem(spec: dict) -> str | None:
    """Why a tokenizer (its tokenizer.json, parsed) might not tokenize the piece after an added
    token the same alone as after the rest of a text; None when nothing does."""
    if any(a.get("lstrip") or a.get("single_word") for a in spec.get("added_tokens", ())):
        return "an added token strips the text before it or matches single words only"

    def problem(node: dict | None, allowed: set[str], what: str, children: str) -> str | None:
        """The first part of a pre-tokenizer or post-processor tree outside `allowed`."""
        if node is None:
            return None
        kind = node.get("type")
        if kind not in allowed:
            return f"{what} {kind}"
        if kind == "Metaspace" and node.get("prepend_scheme") == "first":
            return "Metaspace pre-tokenizer marks the first piece only"
        if kind == "Sequence":
            return next((p for n in node.get(children, ()) if (p := problem(n, allowed, what, children))), None)
        return None

    model = spec.get("model") or {}
    if model.get("type") not in PIECEWISE_MODELS or model.get("dropout"):
        return f"model {model.get('type')}" + (" with dropout" if model.get("dropout") else "")
    return (problem(spec.get("pre_tokenizer"), PIECEWISE_PRE_TOKENIZERS, "pre-tokenizer", "pretokenizers")
            or problem(spec.get("post_processor"), WRAPPING_POST_PROCESSORS, "post-processor", "processors"))


class PromptPieces:
    """tok(prompt) and tok(prompt + answer) for a batch of prompts and their answers, exactly
    as `tokenizer(text=...)` makes them, with each prompt's head tokenized once.

    A Hugging Face tokenizer first cuts a text at its added tokens (<|im_start|>, ...), then
    normalizes, pre-tokenizes and tokenizes each piece between them on its own, then wraps
    the whole in its constant special tokens (a BOS, ...). So the tokens of prompt + answer
    are those of the prompt up to and including its last added token (its head), then those
    of the rest (the prompt's tail and the answer) tokenized alone, wrapped: the head, most
    of a prompt, is tokenized once instead of once per sequence. This holds when each piece
    is treated alike wherever it stands (piecewise_problem) and the added token that ends the
    head cannot be part of a longer one nor strip what follows it; the Rust tokenizer does
    not split special tokens; and the first PIECES_CHECKED_ROWS rows of each process give
    the same ids as whole tokenization. Otherwise every sequence is tokenized whole."""

    def __init__(self, text_ids: TextIds):
        self.text_ids = text_ids
        self.state: str | None = None  # None: not decided yet; "pieces", "whole"
        self.ends: set[int] = set()
        self.wrap: tuple[list[int], list[int]] = ([], [])

    def decide(self) -> None:
        import json

        backend = self.text_ids.backend
        self.state = "whole"
        if backend is None or backend.encode_special_tokens or backend.truncation or backend.padding:
            return
        spec = json.loads(backend.to_str())
        if piecewise_problem(spec):
            return
        added = spec.get("added_tokens", ())
        contents = [a["content"] for a in added]
        self.ends = {a["id"] for a in added if not a.get("normalized") and not a.get("rstrip")
                     and not any(a["content"] != c and a["content"] in c for c in contents)}
        wraps = set()
        for probe in ("a b", f"x{contents[0]}y" if contents else "c"):
            whole, bare = backend.encode(probe).ids, backend.encode(probe, add_special_tokens=False).ids
            at = next((i for i in range(len(whole) - len(bare) + 1) if whole[i:i + len(bare)] == bare), None)
            if at is None:
                return
            wraps.add((tuple(whole[:at]), tuple(whole[at + len(bare):])))
        if len(wraps) != 1:
            return
        before, after = wraps.pop()
        self.wrap = (list(before), list(after))
        self.state = "pieces"

    def __call__(self, prompts: list[str], answers: list[list[str]]) -> tuple[list[list[int]], list[list[list[int]]]]:
        """(tok(prompt) per prompt, [tok(prompt + answer) per prompt] for each list of answers)."""
        self.text_ids(prompts[:1])  # a call through the tokenizer sets the Rust tokenizer as every call does
        if self.state is None:
            self.decide()
            if self.state == "pieces":
                sample, columns = prompts[:PIECES_CHECKED_ROWS], [a[:PIECES_CHECKED_ROWS] for a in answers]
                whole = (self.text_ids(sample), [self.text_ids([p + a for p, a in zip(sample, column)])
                                                 for column in columns])
                if self.pieces(sample, columns) != whole:
                    self.state = "whole"
        if self.state == "pieces":
            return self.pieces(prompts, answers)
        return self.text_ids(prompts), [self.text_ids([p + a for p, a in zip(prompts, column)]) for column in answers]

    def pieces(self, prompts: list[str], answers: list[list[str]]) -> tuple[list[list[int]], list[list[list[int]]]]:
        backend, (before, after) = self.text_ids.backend, self.wrap
        heads, cuts, prompt_ids = [], [], []
        for prompt, encoded in zip(prompts, backend.encode_batch(prompts, add_special_tokens=False)):
            ids = encoded.ids
            end = next((i + 1 for i in range(len(ids) - 1, -1, -1) if ids[i] in self.ends), 0)
            heads.append(ids[:end])
            cuts.append(encoded.offsets[end - 1][1] if end else 0)
            prompt_ids.append(before + ids + after)
        out = []
        for column in answers:
            rests = backend.encode_batch_fast([p[cut:] + a for p, cut, a in zip(prompts, cuts, column)],
                                              add_special_tokens=False)
            out.append([before + head + rest.ids + after for head, rest in zip(heads, rests)])
        return prompt_ids, out


def chat_ids(tokenizer: Any, conversations: list[list[dict]], generation_prompt: bool) -> list[list[int]]:
    """TRL's tokenization of conversations: the chat template, tokenized (no tools)."""
    if not conversations:
        return []
    out = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True, tools=None,
                                        add_generation_prompt=generation_prompt)
    return out["input_ids"]


def prefix_length(ids: list[int], other: list[int]) -> int:
    """TRL's common_prefix_length, without its Python loop when `ids` is a prefix of `other`."""
    from trl.data_utils import common_prefix_length

    return len(ids) if other[:len(ids)] == ids else common_prefix_length(ids, other)


# ---------------------------------------------------------------------------- encodings


class Encoding(abc.ABC):
    """Base of the encodings: the columns the trainer trains on, what it does with a sequence
    over max_length, and how it is kept from tokenizing again."""

    columns: tuple[str, ...] = ()
    # rlhf.trl.pretokenized's adapter of the trainer class for rows holding `columns` (None: the
    # trainer skips its own tokenization by itself, or the encoding makes no columns).
    trainer_adapter: Any = None
    # The trainer cuts a sequence over max_length (else it drops the row).
    truncates = True
    # The trainer drops rows whose prompt alone fills max_length (nothing left to learn from).
    drops_full_prompts = False

    def __init__(self, tokenizer: Any, max_length: int, trainer: str):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.trainer = trainer
        self.text_ids = TextIds(tokenizer)
        self.with_prompt = PromptPieces(self.text_ids)

    @abc.abstractmethod
    def __call__(self, rows: list[dict]) -> Encoded:
        """The encoded batch of `rows`: the trainer's id columns and each row's lengths."""

    def eos(self) -> str:
        eos = self.tokenizer.eos_token
        if not eos:
            raise RowIssue(0, "the tokenizer has no EOS token, which the trainer appends to each answer: set "
                              "one (model.tokenizer with an eos_token)")
        return eos

    def layout(self, rows: list[dict], columns: tuple[str, ...]) -> bool:
        """Whether the rows are conversations (message lists), decided on the first row as TRL
        decides; every row must be of that kind, each of its columns text or messages alike."""
        from trl.data_utils import is_conversational

        conversational = is_conversational(rows[0])
        for index, row in enumerate(rows):
            for name in columns:
                value = row[name]
                ok = isinstance(value, list) if conversational else isinstance(value, str)
                if not ok:
                    expected = "a message list" if conversational else "text"
                    raise RowIssue(index, f"field {name!r} is {kind_of(value)}, but the rows are {expected} "
                                          f"(as the first row is): give every row's {', '.join(columns)} as "
                                          f"{expected}")
        return conversational


class PromptAnswerIds(Encoding):
    """DPOTrainer._prepare_dataset: prompt_ids, chosen_ids, rejected_ids."""

    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    trainer_adapter = staticmethod(pretokenized.skips_prepare_dataset)
    drops_full_prompts = True  # its filter, under the default truncation_mode keep_start

    def __call__(self, rows: list[dict]) -> Encoded:
        if self.layout(rows, ("prompt", "chosen", "rejected")):
            prompts = chat_ids(self.tokenizer, [r["prompt"] for r in rows], True)
            chosen = chat_ids(self.tokenizer, [r["prompt"] + r["chosen"] for r in rows], False)
            rejected = chat_ids(self.tokenizer, [r["prompt"] + r["rejected"] for r in rows], False)
        else:
            eos = self.eos()
            prompts, (chosen, rejected) = self.with_prompt(
                [r["prompt"] for r in rows], [[with_eos(r[name], eos) for r in rows] for name in ("chosen", "rejected")])
        out = Encoded({name: [] for name in self.columns}, [], [])
        for prompt, full_chosen, full_rejected in zip(prompts, chosen, rejected):
            cut = min(prefix_length(prompt, full_chosen), prefix_length(prompt, full_rejected))
            out.diverged += cut < len(prompt)
            out.columns["prompt_ids"].append(prompt[:cut])
            out.columns["chosen_ids"].append(full_chosen[cut:])
            out.columns["rejected_ids"].append(full_rejected[cut:])
            out.lengths.append(max(len(full_chosen), len(full_rejected)))
            out.prompt_lengths.append(cut)
        return out


class PromptCompletionIds(Encoding):
    """KTOTrainer._prepare_dataset up to its tokenization: prompt_ids, completion_ids (the KL
    column, which depends on the batch size, is the trainer's: rlhf.trl.pretokenized)."""

    columns = ("prompt_ids", "completion_ids")
    trainer_adapter = staticmethod(pretokenized.skips_prepare_dataset_but_kl)
    drops_full_prompts = True  # its filter, whatever the truncation mode

    def __call__(self, rows: list[dict]) -> Encoded:
        if self.layout(rows, ("prompt", "completion")):
            prompts = chat_ids(self.tokenizer, [r["prompt"] for r in rows], True)
            full = chat_ids(self.tokenizer, [r["prompt"] + r["completion"] for r in rows], False)
        else:
            eos = self.eos()
            prompts, (full,) = self.with_prompt([r["prompt"] for r in rows],
                                                [[with_eos(r["completion"], eos) for r in rows]])
        out = Encoded({name: [] for name in self.columns}, [], [])
        for prompt, whole in zip(prompts, full):
            cut = prefix_length(prompt, whole)
            out.diverged += cut < len(prompt)
            out.columns["prompt_ids"].append(prompt[:cut])
            out.columns["completion_ids"].append(whole[cut:])
            out.lengths.append(len(whole))
            out.prompt_lengths.append(cut)
        return out


class SequencePairIds(Encoding):
    """RewardTrainer._prepare_dataset: chosen_ids and rejected_ids, each the whole sequence (it
    skips its own tokenization when they are there: no adapter)."""

    columns = ("chosen_ids", "rejected_ids")
    truncates = False  # it drops rows over max_length

    def __call__(self, rows: list[dict]) -> Encoded:
        if self.layout(rows, ("prompt", "chosen", "rejected")):
            chosen = chat_ids(self.tokenizer, [r["prompt"] + r["chosen"] for r in rows], False)
            rejected = chat_ids(self.tokenizer, [r["prompt"] + r["rejected"] for r in rows], False)
        else:
            eos = self.eos()
            _, (chosen, rejected) = self.with_prompt(
                [r["prompt"] for r in rows], [[with_eos(r[name], eos) for r in rows] for name in ("chosen", "rejected")])
        return Encoded({"chosen_ids": chosen, "rejected_ids": rejected},
                       [max(len(a), len(b)) for a, b in zip(chosen, rejected)])


class TokenizeRowIds(Encoding):
    """ORPOTrainer's and CPOTrainer's own preparation, row by row: maybe_extract_prompt,
    maybe_apply_chat_template (both public in trl.data_utils), then the trainer class's own
    `tokenize_row` (rlhf.trl.tokenize_row). It cuts answers at max_length itself: each row
    is tokenized without a limit for its length, and again with the limit when it is over.
    Its trainers take `columns` (and tokenize_row's attention masks beside them)."""

    columns = ("prompt_input_ids", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
    trainer_adapter = staticmethod(pretokenized.constructed_on_no_rows)
    truncates = True

    def __init__(self, tokenizer: Any, max_length: int, trainer: str):
        super().__init__(tokenizer, max_length, trainer)
        self.whole = row_tokenizer(trainer, tokenizer, NO_LIMIT)
        self.cut = row_tokenizer(trainer, tokenizer, max_length)

    def __call__(self, rows: list[dict]) -> Encoded:
        from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

        self.layout(rows, ("prompt", "chosen", "rejected"))
        out = Encoded({}, [])
        for index, row in enumerate(rows):
            row = maybe_apply_chat_template(maybe_extract_prompt(dict(row)), self.tokenizer)
            try:
                whole = self.whole.tokenize_row(row)
            except ValueError as error:  # TRL's own checks of a row (prompts that do not line up)
                raise RowIssue(index, f"the trainer's tokenize_row refuses this row: {error}") from None
            length = max(len(whole["chosen_input_ids"]), len(whole["rejected_input_ids"]))
            tokens = whole if length <= self.max_length else self.cut.tokenize_row(row)
            for name, ids in tokens.items():
                out.columns.setdefault(name, []).append(ids)
            out.lengths.append(length)
        return out


class PromptLengths(Encoding):
    """No columns: the lengths of the prompts as GRPO, RLOO and Online DPO tokenize them when
    they generate (the chat template with the generation prompt, or the text as it is)."""

    def __call__(self, rows: list[dict]) -> Encoded:
        from trl.data_utils import is_conversational

        prompts = [r["prompt"] for r in rows]
        if is_conversational({"prompt": prompts[0]}):
            ids = chat_ids(self.tokenizer, prompts, True)
        else:
            ids = self.text_ids(prompts)
        return Encoded({}, [len(i) for i in ids])


class SequenceLengths(Encoding):
    """No columns, for a method whose trainer tokenizes its rows itself: the length of prompt +
    answer + EOS, the longest answer of each row."""

    def __call__(self, rows: list[dict]) -> Encoded:
        answers = ("chosen", "rejected") if "chosen" in rows[0] else ("completion",)
        eos = self.tokenizer.eos_token or ""
        prompts = [render(r["prompt"], self.tokenizer, True) for r in rows]
        longest = [0] * len(rows)
        for column in answers:
            texts = [prompt + with_eos(render(row[column], self.tokenizer, False), eos)
                     for prompt, row in zip(prompts, rows)]
            for i, ids in enumerate(self.text_ids(texts)):
                longest[i] = max(longest[i], len(ids))
        return Encoded({}, longest)


ENCODINGS: dict[str, type[Encoding]] = {
    PROMPT_ANSWER_IDS: PromptAnswerIds,
    PROMPT_COMPLETION_IDS: PromptCompletionIds,
    SEQUENCE_PAIR_IDS: SequencePairIds,
    TOKENIZE_ROW_IDS: TokenizeRowIds,
}


def encoding(spec: Any, tokenizer: Any, max_length: int) -> Encoding:
    """The encoding of a method for this tokenizer and length limit.

    Args:
        spec: the method's MethodSpec (its `tokenized` kind, shape and TRL trainer).
        tokenizer: the run's tokenizer, chat template applied.
        max_length: method.max_length.

    Returns:
        The Encoding that makes its trainer's id columns (or, for a method whose trainer
        tokenizes itself, only measures the lengths)."""
    if spec.tokenized is not None:
        return ENCODINGS[spec.tokenized](tokenizer, max_length, spec.trl_trainer)
    kind = PromptLengths if spec.shape == PROMPTS else SequenceLengths
    return kind(tokenizer, max_length, spec.trl_trainer)


def trainer_class(base: type, tokenized: str | None) -> type:
    """The class the runner builds for a method: TRL's trainer `base`, adapted to train on the
    columns its encoding (ENCODINGS[tokenized]) makes, without tokenizing them again."""
    kind = ENCODINGS.get(tokenized) if tokenized is not None else None
    if kind is None:
        return base
    return pretokenized.adapted(base, kind.trainer_adapter, kind.columns)


def with_eos(text: str, eos: str) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def render(value: Any, tokenizer: Any, generation_prompt: bool) -> str:
    """A prompt or answer as text: a string as it is, messages through the chat template."""
    if isinstance(value, str):
        return value
    return tokenizer.apply_chat_template(value, tokenize=False, add_generation_prompt=generation_prompt)


def id_arrays(columns: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Id columns as Arrow arrays of int32 lists (half of int64's bytes; the trainer's collator
    makes int64 tensors of them all the same)."""
    import pyarrow as pa

    return {name: pa.array(values, type=pa.list_(pa.int32())) for name, values in columns.items()}

