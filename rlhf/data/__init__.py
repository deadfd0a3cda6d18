"""Training data: dataset types (rlhf.data.formats) and the pipeline that applies them."""

from rlhf.data.formats import format_row  # noqa: F401
