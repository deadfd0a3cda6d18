"""Training data: from the `dataset` config to the datasets the trainer receives, checked row by row.

- `sources`: where rows come from (local files, hub datasets, splits, extra and eval sources);
- `formats`: the dataset types, each a template family times a field mapping (`format_row`);
- `rows`: every row of a source through its type, the first bad one named with its file:line;
- `tokenize`: the ids each TRL trainer trains on, made once, and the trainer class that takes
  them (`ENCODINGS`, one per MethodSpec.tokenized);
- `workers`: that work in chunks on every core the job has, with progress lines;
- `build`: formatting, tokenizing, the length rule, shuffle and split, on a cache miss;
- `cache`: the data stage's entry, `prepare_data`: the cached datasets, or built and cached,
  rank 0 preparing for every rank of a job;
- `preflight`: the launcher's check of every row before any job starts;
- `lint`: the warning when a dataset's chat format is not the model's;
- `checks`: what validation asks of the dataset block (registered in rlhf.config.registry);
- `preview`: the first rows as the trainer gets them (`python -m rlhf.preview`).

May import: every side up to rlhf.cluster.
"""

from rlhf.data import checks  # noqa: F401  (registers the dataset block's checks with validation)
from rlhf.data.formats import format_row  # noqa: F401
