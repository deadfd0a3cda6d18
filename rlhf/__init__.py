"""rlhf: preference optimisation and RL fine-tuning of language models, composed with Hydra, on TRL.

The package is grouped by side. Each side is a package whose docstring says what lives there
and what it may import; `LAYERS` below is the one statement of their order, bottom first. A
module may import its own side and the sides below it, never one above
(tests/test_architecture.py checks every import against this list). Where a lower side needs
something only a higher one knows, the higher side registers it (methods register their specs,
the data and judge sides their checks, in rlhf.config.registry).

    core, assets   leaves: errors, user code, the hub probe, file locks; the shipped files
    config         the typed config: schemas, knobs, validation (no Hydra, no torch)
    run            the run-dir contract: file names, the run dir's records, run names
    models         loading the policy, its tokenizer and chat template; the reference choice
    rewards        the shipped reward functions, and where a reward comes from
    methods        one MethodSpec per method: its knobs and the TRL fields they set
    trl            every adapter of TRL's or accelerate's internals, with its version range
    cluster        devices, ranks, SLURM, the vLLM server, the GPU check
    data           sources, dataset types, tokenizing once, the data stage and its cache
    judge          the generation eval stage, sweep reports, statistics
    job            one job from its run dir: set the process up, train, save, record
    launch         the launching side, where Hydra lives: compose, validate every job, run them
    dev            the documentation generator and the benchmarks

The modules left at the top are the entry points, `python -m rlhf.<name>`: train, evaluate,
report, preview, vllm_serve, gpu_check, docs and bench. They sit above every side.
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "assets"),
    ("config",),
    ("run",),
    ("models",),
    ("rewards",),
    ("methods",),
    ("trl",),
    ("cluster",),
    ("data",),
    ("judge",),
    ("job",),
    ("launch",),
    ("dev",),
)
