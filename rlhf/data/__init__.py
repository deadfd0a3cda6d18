"""Training data: dataset types (rlhf.data.formats), the pipeline that applies them, the trainer's token
ids made once (rlhf.data.tokenize) and the worker processes that make them (rlhf.data.workers)."""

from rlhf.data.formats import format_row  # noqa: F401
