"""ORPOTrainer's and CPOTrainer's own row tokenizer, called without building the trainer.

Their `tokenize_row` is an instance method that reads only the tokenizer (`processing_class`),
`max_length`, `is_encoder_decoder` and `padding_value`; the trainer's constructor would load
and wrap a model first. So the data stage (rlhf.data.tokenize.TokenizeRowIds) calls it on an
instance made with `__new__` that holds just those four attributes. A TRL whose tokenize_row
reads anything else fails there with an AttributeError, and tests/test_tokenize_once.py holds
its output to the trainer's own.
"""

from __future__ import annotations

from typing import Any

from rlhf.core.usercode import import_object
from rlhf.trl import written_for

WRITTEN_FOR = written_for(trl=">=1.16,<1.17")


def row_tokenizer(trainer: str, tokenizer: Any, max_length: int) -> Any:
    """An object whose `tokenize_row(row)` is the `trainer` class's (a MethodSpec's
    "module:Class"), cutting at `max_length` tokens."""
    trainer_class = import_object(trainer)
    rows = trainer_class.__new__(trainer_class)
    rows.processing_class = tokenizer
    rows.is_encoder_decoder = False
    rows.max_length = max_length
    rows.padding_value = tokenizer.pad_token_id
    return rows
