"""Train one job from its run dir, as four named steps:

    prepare   config -> validate -> the process set up -> tokenizer -> data
              -> the generation eval stage's prompts and scorers
    build     TRL config -> model (+ reference) -> TRL trainer (every rank says where it runs)
    fit       train, resuming from the run dir's last checkpoint
    finish    final eval -> save model -> generation eval (rlhf.judge) -> metrics.json -> SUCCESS

The only input is `<run_dir>/config.yaml`, so the process Hydra started, an extra rank and a
SLURM task all run exactly this. No Hydra here. `train` is the job; `run_until_done` wraps it
for SLURM's warning signals; the helpers the steps call follow them in the order they are called.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.cluster import devices, distributed
from rlhf.config.validate import RunSpec, validate
from rlhf.core.errors import RlhfError, did_you_mean
from rlhf.core.usercode import import_object
from rlhf.job import progress, rungs
from rlhf.job.process import start_process
from rlhf.models import reference
from rlhf.models.heads import LORA_TASK_TYPES
from rlhf.run import rundir

log = logging.getLogger("rlhf")


def train(run_dir: str | Path, callbacks: list | None = None, run: RunSpec | None = None) -> dict[str, Any]:
    """Train the job in `run_dir` to its end, or to a preemption's checkpoint.

    Args:
        run_dir: the job's run dir; its config.yaml is the only input.
        callbacks: trainer callbacks beside the job's own (rlhf.job.preemption's).
        run: config.yaml already validated in this process (the one Hydra composed); other
            processes validate the file.

    Returns:
        The job's final metrics (as metrics.json holds them on rank 0), or
        `{"stopped_at_step": N}` when a preemption stopped it after saving a checkpoint.
    """
    job = prepare(Path(run_dir), run)
    trainer = build(job, [*(callbacks or []), *([rungs.stopper(job.stop_at)] if job.stop_at else [])])
    result = fit(job, trainer)
    if result is None:  # preempted, or at a halving sweep's rung: saved, not finished
        step = trainer.state.global_step
        if step == job.stop_at and trainer.is_world_process_zero():
            seconds = time.perf_counter() - job.started
            rungs.record(job.run_dir, trainer, step, job.data.eval is not None, seconds=seconds,
                         cpu_seconds=time.process_time() - job.cpu_started,
                         gpu_seconds=devices.gpu_seconds(job.run.hardware, seconds))
        return {"stopped_at_step": step}
    metrics = finish(job, trainer, result)
    release(trainer)
    return metrics


@dataclass
class Job:
    """What the steps of one job hand on to each other."""

    run_dir: Path
    config: dict  # config.yaml
    run: RunSpec
    started: float  # perf_counter when the process was set up
    tokenizer: Any = None
    data: Any = None  # rlhf.data.cache.PreparedData
    judge: Any = None  # rank 0's generation eval stage (None elsewhere, or when it does not run)
    reference: Any = None  # rlhf.models.reference.Reference
    tracker: Any = None  # the W&B run
    shared: dict | None = None  # per split: the shared reference log-probs computed or reused
    layout: Any = None  # the packed calls' Tally when batches run padding-free (rlhf.trl.padding_free)
    ranks: list = field(default_factory=list)  # where each rank runs
    totals: Any = None  # rlhf.trl.run_totals.RunTotals
    stop_at: int | None = None  # a halving sweep's rung: the step the job stops at (rlhf.job.rungs)
    cpu_started: float = 0.0  # process_time when the job started (this process's CPU seconds, every thread)


def prepare(run_dir: Path, run: RunSpec | None) -> Job:
    """The job's config validated, this process set up for it, the tokenizer, the data (rank 0
    prepares it, the other ranks wait) and the generation eval stage, whose scorers and prompt
    columns fail now if they fail, before any model loads."""
    from rlhf.core.usercode import EXTRA_DIRS
    from rlhf.data.cache import prepare_data
    from rlhf.models.loading import load_tokenizer

    config = rundir.read_config(run_dir)
    run = run or validate(config)
    EXTRA_DIRS[:] = [Path(d) for d in run.code_path]
    start_process(run)
    job = Job(run_dir, config, run, started=time.perf_counter(), stop_at=rungs.stop_step(),
              cpu_started=time.process_time())
    job.tokenizer = load_tokenizer(run.model)
    job.data = prepare_data(run, job.tokenizer, run_config=config, run_dir=run_dir)
    job.judge = generation_stage(run, job.data, job.tokenizer)
    return job


def build(job: Job, callbacks: list) -> Any:
    """The TRL trainer of the job, with its model and reference.

    The TRL config comes before any model: creating it starts the process group and, with
    ZeRO-3, registers the DeepSpeed config, which is what makes from_pretrained load each model
    sharded (zero.Init) instead of whole on every rank. FSDP's loading is set up next."""
    from rlhf.trl.run_totals import RunTotals

    run, data = job.run, job.data
    method_inputs = run.spec.trainer_inputs(run, data.train.column_names) if run.spec.trainer_inputs else {}
    args = trl_arguments(run, job.run_dir, data.eval is not None, rows=len(data.train))
    distributed.prepare_strategy(run.hardware)
    model = load_policy(run, job.tokenizer.pad_token_id)
    check_target_modules(run, model)
    job.reference = reference.load(run, reference.choose(run))
    log.info("reference model: %s", job.reference.why)
    if run.logger.backend == "wandb":
        from rlhf.job import wandb_run

        job.tracker = wandb_run.start(run.logger, job.run_dir, job.config)
    kwargs = trainer_kwargs(job, model, args, method_inputs, callbacks)
    trainer, job.shared = build_trainer(run, kwargs, data.path)
    job.layout = lay_out_batches(run, trainer)
    place_reward_runs(trainer)
    # The process group exists now: every rank says where it runs and how it got the policy.
    job.ranks = distributed.gather_ranks(policy=getattr(model, RANK_LOADED, "read the checkpoint"))
    log_ranks(job.ranks)
    progress.replace_printer(trainer, run.spec.progress_metric)  # a progress line, not a raw dict
    job.reference.model = None  # the trainer holds what it needs; a released reference is freed
    job.totals = RunTotals.attach(trainer)  # train_loss and num_tokens of the whole run, across resumes
    return trainer


def load_policy(run: RunSpec, pad_token_id: int | None) -> Any:
    """The policy with the head the method trains. Under FSDP rank 0 alone reads the checkpoint
    and the other ranks build its structure (distributed.rank0_loads); else every rank loads it."""
    from rlhf.models.loading import layout, load_model, load_skeleton

    head = run.spec.model_head

    def load() -> Any:
        return load_model(run.model, run.hardware, adapter=run.peft.adapter, head=head, pad_token_id=pad_token_id,
                          seed=run.seed)

    if not rank0_loads(run):
        return load()
    log.info("model: rank 0 reads the checkpoint, the other ranks receive their shards from it (FSDP "
             "cpu_ram_efficient_loading)")

    def skeleton(shape: dict[str, Any]) -> Any:
        built = load_skeleton(run.model, shape, head=head, pad_token_id=pad_token_id)
        setattr(built, RANK_LOADED, "built empty, its shards broadcast from rank 0")
        return built

    return distributed.on_rank0(load, skeleton, layout)


RANK_LOADED = "_rlhf_loaded"  # how this rank got its policy, as metrics.json's ranks record it


def rank0_loads(run: RunSpec) -> bool:
    """distributed.rank0_loads for this run: TRL reads the policy before sharding it when it
    precomputes the reference log-probs with the policy's adapter disabled."""
    chosen = reference.choose(run)
    early = chosen.kind == reference.PRECOMPUTED and run.peft.adapter != "none"
    return distributed.rank0_loads(run.hardware, run.peft.adapter, early)


def fit(job: Job, trainer: Any) -> Any:
    """Train, resuming from the run dir's last checkpoint; the TrainOutput, or None when a
    preemption stopped training after saving a checkpoint."""
    resume = rundir.latest_checkpoint(job.run_dir)
    if resume is None:
        (job.run_dir / rundir.HISTORY).unlink(missing_ok=True)
    else:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps:
        return None
    return result


def finish(job: Job, trainer: Any, train_result: Any) -> dict[str, Any]:
    """The final metrics, the saved model, and on rank 0 the generation eval, metrics.json and
    SUCCESS. Every rank saves: FSDP and ZeRO-3 gather the full weights collectively (rank 0 alone
    would wait for ranks that left); Trainer.save_model writes on rank 0 only. The other ranks are
    done then: the rest is rank 0's, without collectives."""
    run = job.run
    metrics = final_metrics(run, trainer, train_result, job.data.eval is not None, job.totals.metrics(train_result))
    if run.hardware.accelerator == "cuda":  # this rank's peak (training and final eval), for rlhf.gpu_check
        import torch

        metrics["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    held = models_in_memory()  # counted after training (same models), so the count costs no step time
    strategy = distributed.describe(trainer)
    save_model(run, trainer, job.run_dir / rundir.MODEL_DIR)
    if trainer.is_world_process_zero():
        record(job, trainer, metrics, held, strategy)
    return metrics


def record(job: Job, trainer: Any, metrics: dict[str, Any], held: int, strategy: dict[str, Any]) -> None:
    """Rank 0's end of the job: the generation eval of the trained policy, then metrics.json, the
    W&B summary and SUCCESS, written last."""
    run, data = job.run, job.data
    job_peak = devices.job_peak_memory(run.hardware)  # before the stage's measure resets the high-water mark
    if job.judge is not None:
        with devices.stretch_peak(run.hardware) as memory:
            metrics["generation"] = judge_final(run, job.judge, trainer, job.run_dir)
        metrics["generation"]["memory"] = memory  # the stage's own peak, what training left held included
    else:
        from rlhf.judge.checks import why_off

        metrics["generation_off"] = why_off(run)  # so a sweep's report says the stage did not run, and why
    seconds = time.perf_counter() - job.started
    metrics.update(
        method=run.method.kind,
        metric=run.spec.metric,
        metric_value=rundir.flat_metrics(metrics).get(run.spec.metric),
        data={"cache": data.cache, "path": str(data.path), **data.report.__dict__},
        reference={"kind": job.reference.kind, "why": job.reference.why, "models_in_memory": held,
                   **({"precomputed": job.shared} if job.shared is not None else {})},
        distributed=strategy,
        seconds=round(seconds, 2),
        cpu_seconds=round(time.process_time() - job.cpu_started, 2),
        # The session's wall seconds times the GPUs the job holds (devices.gpu_seconds); None on the CPU.
        gpu_seconds=devices.gpu_seconds(run.hardware, seconds),
        ranks=job.ranks,
        batches=batch_layout(job),
    )
    metrics.update(devices.job_peak_memory(run.hardware, at_least=job_peak))  # the whole job's, save and eval included
    rundir.write_metrics(job.run_dir, metrics)
    if job.tracker is not None:
        from rlhf.job import wandb_run

        job.tracker.summary.update({"metric_value": metrics["metric_value"]})
        wandb_run.finish(job.tracker)
    rundir.mark_success(job.run_dir)
    log.info("finished: %s = %s; run dir %s", run.spec.metric, metrics["metric_value"], job.run_dir)


def batch_layout(job: Job) -> dict[str, Any]:
    """How this session laid out its batches: padding-free with its token counts
    (rlhf.trl.padding_free.Tally), or padded, and why."""
    if job.layout is not None:
        figures = job.layout.record()
        log.info("batch layout: padding-free, %d model calls packed, %d real tokens, %d padding tokens avoided "
                 "(%.0f%% of the padded layout)", figures["packed_calls"], figures["tokens"],
                 figures["padding_tokens_avoided"], 100 * figures["padding_share_avoided"])
        return figures
    if job.run.spec.padding_free is None:
        return {"layout": "padded", "why": f"{job.run.spec.kind} has no padding-free layout"}
    if not job.run.method.padding_free:
        return {"layout": "padded", "why": "method.padding_free=false"}
    return {"layout": "padded", "why": "the model cannot run packed rows (see the log)"}


def run_until_done(run_dir: Path, run: RunSpec | None = None) -> dict[str, Any]:
    """`train`, saving and stopping on SLURM's warning signals (see rlhf.job.preemption)."""
    from rlhf.job.preemption import Preemption

    run = run or validate(rundir.read_config(run_dir))
    start_process(run)  # before the callback below imports transformers
    from rlhf.cluster.vllm_server import server_for_job

    preemption, metrics = Preemption().install(), {}
    try:
        with server_for_job(run, run_dir):  # a job in vLLM server mode may run its own server
            metrics = train(run_dir, callbacks=[preemption.callback()], run=run)
    finally:
        # A recorded signal requeues (submitit) and raises Preempted, or on Ctrl-C Interrupted.
        preemption.finish(metrics.get("stopped_at_step"))
    return metrics


def prepare_before_ranks(run_dir: Path, run: RunSpec) -> None:
    """Check the machine and prepare the data once, in the process that starts the ranks: a bad
    row is then one message before torchrun starts, and every rank finds the data cached."""
    from rlhf.data.cache import prepare_data
    from rlhf.models.loading import load_tokenizer

    start_process(run)
    prepare_data(run, load_tokenizer(run.model), run_config=rundir.read_config(run_dir))


# ---------------------------------------------------------------------------- what train() calls


def check_target_modules(run: RunSpec, model: Any) -> None:
    """Each LoRA target module name matches a module of the model (PEFT's own error comes from
    deep inside the trainer, without the names the model has)."""
    import torch

    targets = run.peft.target_modules
    if run.peft.adapter == "none" or isinstance(targets, str):
        return  # a string is 'all-linear' or a regular expression, which PEFT checks itself
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        hints = "".join(did_you_mean(t, linear) for t in missing)
        raise RlhfError(f"peft.target_modules: {', '.join(repr(t) for t in missing)} matches no module of "
                        f"{run.model.name_or_path}{hints}; its linear layers are {', '.join(linear)} "
                        "(or use 'all-linear')")


def trainer_kwargs(job: Job, model: Any, args: Any, method_inputs: dict[str, Any], callbacks: list) -> dict[str, Any]:
    """What the TRL trainer is built with: the model, its config, the data, the callbacks (the
    log history, the caller's, the mid-training generation eval), the adapter, the method's own
    inputs (an online method's rewards) and the reference model where the method takes one."""
    run = job.run
    evaluating = job.judge is not None and (run.evaluate.every_n_steps or job.stop_at)
    kwargs: dict[str, Any] = dict(
        model=model, args=args, train_dataset=job.data.train, eval_dataset=job.data.eval,
        processing_class=job.tokenizer,
        callbacks=[history_writer(job.run_dir / rundir.HISTORY), *callbacks,
                   *([job.judge.callback(job.run_dir, lambda policy: generation_reference(run, policy),
                                         also_at=job.stop_at)]
                     if evaluating else [])],
        peft_config=peft_config(run), **method_inputs,
    )
    if run.spec.reference_arg is not None:
        kwargs[run.spec.reference_arg] = job.reference.model
    return kwargs


def lay_out_batches(run: RunSpec, trainer: Any) -> Any:
    """The trainer's models made to run each micro-batch as one packed row where the method can
    (MethodSpec.padding_free) and `method.padding_free` is on (rlhf.trl.padding_free). Returns
    the Tally of the packed calls, or None when batches are padded as TRL pads them."""
    if run.spec.padding_free is None:
        return None
    if not run.method.padding_free:
        log.info("batch layout: padded as TRL pads it (method.padding_free=false)")
        return None
    from rlhf.trl import padding_free

    return padding_free.apply(trainer, run.spec.padding_free)


def place_reward_runs(trainer: Any, prepare: Any = None) -> None:
    """Under DeepSpeed TRL partitions the reward models it is given with prepare_deepspeed
    (trl/trainer/grpo_trainer.py:1208-1211, rloo_trainer.py:841-843); a finished reward run is a
    function to TRL (rlhf.rewards.sources.RewardRun), so its model is prepared the same way
    here. Elsewhere it goes to this rank's device on its first call, as TRL's do. `prepare`:
    trl.models.prepare_deepspeed (a stand-in in tests). Not run on GPUs here."""
    from rlhf.rewards.sources import RewardRun

    if not trainer.is_deepspeed_enabled:
        return
    if prepare is None:
        from trl.models import prepare_deepspeed as prepare
    for function in getattr(trainer, "reward_funcs", None) or []:
        if isinstance(function, RewardRun):
            function.model = prepare(function.model, trainer.accelerator)


def log_ranks(ranks: list[dict[str, Any]]) -> None:
    """Where each rank of a job of several runs, logged once, by rank 0."""
    if len(ranks) > 1 and distributed.this_rank()[0] == 0:
        log.info("ranks: %s", ", ".join(f"{r['rank']} on {r['slurm_node'] or r['host']} ({r['address']})"
                                        for r in ranks))


def generation_stage(run: RunSpec, data: Any, tokenizer: Any) -> Any:
    """The generation eval stage (rlhf.judge) of rank 0, prepared before any model loads; None
    when it does not run, and the log says why."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    from rlhf.judge import stage
    from rlhf.judge.checks import why_off

    off = why_off(run)
    if off is not None:
        log.info("generation eval: off (%s)", off)
        return None
    return stage.prepare(run, data.eval, tokenizer)


def generation_reference(run: RunSpec, policy: Any) -> Any:
    from rlhf.judge import stage

    return stage.Reference(run, policy)


def judge_final(run: RunSpec, judge: Any, trainer: Any, run_dir: Path) -> dict[str, Any]:
    """The stage on the trained policy, after the training state is freed (free_training_state):
    the policy in memory, in the dtype it was saved in, or the saved one when the ranks held it
    in shards. The stage's reference is freed when it is done."""
    from rlhf.judge import stage

    with distributed.loading_whole_models(trainer.args):  # rank 0 alone: whole models, no collective
        if distributed.sharded(run.hardware):
            free_training_state(trainer)
            policy = stage.load_policy(run, run_dir / rundir.MODEL_DIR)
        else:
            policy = free_training_state(trainer, keep=trainer.accelerator.unwrap_model(trainer.model))
            as_saved(run, policy)
        reference = stage.Reference(run, policy)
        try:
            return judge.evaluate_policy(policy, reference, out_dir=run_dir)
        finally:
            reference.release()


def free_training_state(trainer: Any, keep: Any = None) -> Any:
    """Free what only training needed, before rank 0's end-of-run stage loads anything: the
    optimizer's state and the scheduler (held by the trainer, its callback handler and
    accelerate), the gradients, TRL's reference model, a colocated vLLM engine, and the trained
    model's wrappers (DDP, a DeepSpeed engine with its optimizer partitions), or the model
    itself when `keep` is None (sharded: the stage reads the saved one). Returns `keep`, the
    unwrapped policy the stage uses. The trainer is done after this: only release() follows."""
    import gc

    import torch

    release_vllm(trainer, alone=trainer.accelerator.num_processes == 1)
    if keep is not None:
        keep.zero_grad(set_to_none=True)
    for holder in (trainer, trainer.callback_handler):
        holder.optimizer = holder.lr_scheduler = None
    trainer.model = trainer.model_wrapped = keep
    if hasattr(trainer, "ref_model"):
        trainer.ref_model = None
    accelerator = trainer.accelerator
    for held in ("_optimizers", "_schedulers", "_models", "_dataloaders"):
        getattr(accelerator, held, []).clear()
    accelerator.deepspeed_engine_wrapped = None
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    return keep


def as_saved(run: RunSpec, policy: Any) -> None:
    """The policy in memory cast to the dtype its model/ was saved in (rlhf.models.loading.saved_dtype:
    fp32-trained weights under bf16 autocast are saved in bf16), so that the stage judges what
    `python -m rlhf.evaluate` reads back, in half the memory."""
    from rlhf.models.loading import saved_dtype, torch_dtype

    dtype = saved_dtype(run.model, run.hardware, run.peft.adapter)
    if dtype is None:
        return
    # The parameters only: module.to() would cast the rotary embedding's inv_freq buffer too,
    # which from_pretrained(dtype=bfloat16) keeps in fp32 (positions then differ from the reloaded
    # model's, a log-prob gap of ~0.007 nats over 10 tokens on the tiny model).
    for parameter in policy.parameters():
        parameter.data = parameter.data.to(torch_dtype(dtype))


def trl_arguments(run: RunSpec, run_dir: Path, has_eval: bool, rows: int = 0) -> Any:
    """The TRL config of this run: the method's fields plus what the run and hardware decide.
    `rows`: the training rows, which decide whether what TRL still maps over them (a length
    filter, a prompt column) runs on the data stage's worker processes."""
    import dataclasses

    from rlhf.data import workers

    kwargs = run.spec.trl_kwargs(run.method, has_eval)
    if run.spec.run_trl is not None:
        kwargs.update(run.spec.run_trl(run))
    hardware = run.hardware
    kwargs.update(
        output_dir=str(run_dir / rundir.CHECKPOINTS),
        seed=run.seed,
        data_seed=run.seed,
        use_cpu=hardware.accelerator == "cpu",
        bf16=hardware.precision == "bf16",
        fp16=hardware.precision == "fp16",
        dataloader_num_workers=hardware.dataloader_num_workers,
        report_to=[] if run.logger.backend == "none" else [run.logger.backend],
        **distributed.trl_kwargs(hardware, rank0_loads=rank0_loads(run)),
        logging_first_step=True,
        disable_tqdm=not sys.stderr.isatty(),
    )
    config_class = import_object(run.spec.trl_config)
    kwargs.update(reload_kwargs(run, config_class))
    if rows >= workers.PARALLEL_MIN_ROWS and "dataset_num_proc" in {f.name for f in dataclasses.fields(config_class)}:
        kwargs["dataset_num_proc"] = workers.processes(run)
    return config_class(**kwargs)


def reload_kwargs(run: RunSpec, config_class: type) -> dict[str, Any]:
    """What TRL needs to load the policy's checkpoint again itself (the reference GRPO and RLOO
    build with beta > 0 and no adapter; DPO's and KTO's reference under FSDP): it reloads
    `model.config._name_or_path` with `args.model_init_kwargs` and `args.trust_remote_code`,
    so without these it reads the hub's main revision, or refuses remote code the policy ran.
    The rest of `model_init_kwargs` is reference_init_kwargs'."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_class)}
    kwargs: dict[str, Any] = {}
    if "trust_remote_code" in fields:
        kwargs["trust_remote_code"] = run.model.trust_remote_code
    init = reference_init_kwargs(run)
    if "model_init_kwargs" in fields and init:
        kwargs["model_init_kwargs"] = init
    return kwargs


def reference_init_kwargs(run: RunSpec) -> dict[str, Any]:
    """from_pretrained's arguments for the frozen copy TRL reloads, beyond its defaults.

    - `revision`: the policy's.
    - `dtype`: the frozen copy's (rlhf.models.loading.frozen_copy_dtype) where it is not the
      policy's, which TRL would use (trl/trainer/dpo_trainer.py:924, grpo_trainer.py:1001).
    - `device_map=None` under FSDP: TRL sets it only for DDP and DeepSpeed
      (dpo_trainer.py:920, grpo_trainer.py:997, rloo_trainer.py:683, kto_trainer.py:931) and
      otherwise lets create_model_from_path pick "auto" on a GPU (trl/trainer/utils.py:1350-1351).
      Every rank of a node sees the node's training GPUs (rlhf.cluster.devices), so "auto"
      would spread each rank's copy over all of them with accelerate's dispatch hooks, and
      prepare_fsdp's fully_shard then moves the weights to the rank's own GPU
      (torch/distributed/fsdp/_fully_shard/_fsdp_init.py:369-401) while the hooks still send
      each layer's inputs to the GPU it was dispatched to. With None the copy loads on the CPU
      and fully_shard moves each rank's shard to its GPU. Not run on GPUs here.
    """
    from rlhf.models.loading import frozen_copy_dtype, weights_dtype

    init: dict[str, Any] = {}
    if run.model.revision is not None:
        init["revision"] = run.model.revision
    adapter = run.peft.adapter
    frozen = frozen_copy_dtype(run.model, run.hardware, adapter)[0]
    if frozen != weights_dtype(run.model, adapter)[0]:
        init["dtype"] = frozen
    if run.hardware.world_size > 1 and run.hardware.distributed == "fsdp":
        init["device_map"] = None
    return init


class ReloadOnlyKwargs(logging.Filter):
    """TRL warns that `model_init_kwargs` are ignored when the model is passed loaded; they are
    not: its reference reload reads them (reload_kwargs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`model_init_kwargs` will be ignored" not in record.getMessage()


RELOAD_ONLY = ReloadOnlyKwargs()


def history_writer(path: Path) -> Any:
    """A callback that appends every logged metrics dict to log_history.jsonl as it happens
    (rank 0 only)."""
    from transformers import TrainerCallback

    class HistoryWriter(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as f:
                    line = {"step": state.global_step, **logs, "time": time.time(),
                            "cpu_time": time.process_time()}
                    f.write(json.dumps(line) + "\n")

    return HistoryWriter()


def peft_config(run: RunSpec) -> Any:
    if run.peft.adapter == "none":
        return None
    from peft import LoraConfig

    target = run.peft.target_modules
    return LoraConfig(r=run.peft.r, lora_alpha=run.peft.alpha, lora_dropout=run.peft.dropout,
                      target_modules=target if isinstance(target, str) else list(target),
                      bias=run.peft.bias, task_type=LORA_TASK_TYPES[run.spec.model_head])


def save_model(run: RunSpec, trainer: Any, model_dir: Path) -> None:
    """The trained model and its tokenizer in `model_dir`, as the trainer saves them: full
    weights, or the adapter alone (which loads as the causal LM it was trained on). Every rank
    calls this: a sharded model (FSDP, ZeRO-3) is gathered by all ranks together, and
    Trainer.save_model writes on rank 0 only.

    A classifier trained with an adapter is saved merged: PEFT's adapter of a new one-label head
    does not load with `AutoModelForSequenceClassification.from_pretrained(model_dir)` (the
    base checkpoint it names has no such head), a merged model does, anywhere a reward model
    is read (evaluate.reward_models, an online method). The adapter itself (with the head)
    goes to `model_dir/adapter`. Rank 0 merges: the model in memory when it holds whole
    weights; under sharding, the adapter just saved (all ranks gathered it) put on the base
    checkpoint, since the model in memory holds only this rank's shard of each weight."""
    if run.peft.adapter == "none" or not run.spec.trains_reward_model:
        save_trained(run, trainer, model_dir)
        return
    save_trained(run, trainer, model_dir / rundir.ADAPTER_DIR)
    if not trainer.is_world_process_zero():
        return
    if distributed.sharded(run.hardware):
        with distributed.loading_whole_models(trainer.args):
            merged = merge_saved_adapter(run, model_dir / rundir.ADAPTER_DIR, trainer.processing_class.pad_token_id)
    else:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        trainer.model = trainer.model_wrapped = merged
    merged.save_pretrained(str(model_dir))
    trainer.processing_class.save_pretrained(str(model_dir))
    log.info("saved the model merged with its adapter in %s (the adapter alone: %s)", model_dir,
             model_dir / rundir.ADAPTER_DIR)


def save_trained(run: RunSpec, trainer: Any, out: Path) -> None:
    """The trained weights (or adapter) and the tokenizer in `out`, in the dtype a user loads
    them with (rlhf.models.loading.saved_dtype: bf16 for weights trained in fp32 under bf16).
    Under FSDP every rank takes part in gathering the whole model (accelerate's get_state_dict,
    accelerator.py:4096-4100: full, on rank 0's CPU), which rank 0 writes; the Trainer's own
    save_model writes nothing under the sharded checkpoints (trainer.py:4097-4100). DeepSpeed
    keeps the Trainer's save (ZeRO-3 gathers 16-bit weights itself)."""
    from rlhf.models.loading import saved_dtype

    dtype = saved_dtype(run.model, run.hardware, run.peft.adapter)
    if trainer.is_deepspeed_enabled or (dtype is None and not trainer.is_fsdp_enabled):
        trainer.save_model(str(out))
        return
    state = trainer.accelerator.get_state_dict(trainer.model)
    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(str(out), state_dict=cast_weights(state, dtype))
    if dtype is not None:
        # config.json says what the weights are (from_pretrained's dtype="auto" reads it);
        # save_pretrained wrote the dtype of the model in memory (modeling_utils.py:3433-3434).
        config, trained = model.config, model.config.dtype
        config.dtype = dtype
        try:
            config.save_pretrained(str(out))
        finally:
            config.dtype = trained
    trainer.processing_class.save_pretrained(str(out))
    log.info("saved the model in %s (%s)", out, f"{dtype} weights" if dtype else "as trained")


def cast_weights(state: dict[str, Any], dtype: str | None) -> dict[str, Any]:
    """`state`'s floating tensors in `dtype`, on the CPU (None: unchanged). Tensors that share
    storage (tied embeddings) stay one tensor, so save_pretrained still writes it once."""
    import torch

    if dtype is None:
        return state
    cast: dict[tuple, Any] = {}
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if key not in cast:
            cast[key] = tensor.detach().to("cpu", getattr(torch, dtype))
        out[name] = cast[key]
    return out


def merge_saved_adapter(run: RunSpec, adapter_dir: Path, pad_token_id: int | None) -> Any:
    """The base checkpoint with the head the method trains, the saved adapter (and its trained
    head) on it, merged: the whole trained model on this rank alone, with no collective."""
    from peft import PeftModel

    from rlhf.models.loading import load_model

    base = load_model(run.model, run.hardware, "base model", head=run.spec.model_head, pad_token_id=pad_token_id,
                      seed=run.seed)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def build_trainer(run: RunSpec, kwargs: dict[str, Any], data_dir: Path) -> tuple[Any, dict | None]:
    """The TRL trainer. A method whose reference log-probs are precomputed and shareable goes
    through the shared store (rlhf.trl.shared_reference). Returns, per split, whether they were
    computed or reused (None when the store is not used)."""
    from rlhf.data import tokenize

    trl_class = import_object(run.spec.trl_trainer)
    logging.getLogger(trl_class.__module__).addFilter(RELOAD_ONLY)
    # TRL's trainer, training on the ids the data stage made without tokenizing again.
    trainer_class = tokenize.trainer_class(trl_class, run.spec.tokenized)
    if not (run.spec.shares_reference_logps and getattr(run.method, "precompute_ref_log_probs", False)):
        return trainer_class(**kwargs), None
    from rlhf.trl import shared_reference

    return shared_reference.build_trainer(trainer_class, kwargs, data_dir, run.hardware.world_size)


def final_metrics(run: RunSpec, trainer: Any, train_result: Any, has_eval: bool,
                  run_totals: dict[str, Any] | None = None) -> dict[str, Any]:
    """`run_totals` (rlhf.trl.run_totals) replace the Trainer's figures of this session only."""
    history = trainer.state.log_history
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    if has_eval and (not evals or evals[-1].get("step", trainer.state.global_step) != trainer.state.global_step):
        trainer.evaluate()
        evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    train_logs = [h for h in history if "loss" in h]
    return {
        "train": {**train_result.metrics, **(run_totals or {}),
                  **({"last_logged": train_logs[-1]} if train_logs else {})},
        "eval": {k: v for k, v in evals[-1].items() if k.startswith("eval_")} if evals else {},
        "global_step": trainer.state.global_step,
        "first_loss": train_logs[0]["loss"] if train_logs else None,
        "learning": run.spec.summarize(trainer.state.log_history) if run.spec.summarize else {},
    }


def models_in_memory() -> int:
    """How many transformers models this process holds (a reference copy shows up here)."""
    import gc
    import warnings

    from transformers import PreTrainedModel

    gc.collect()  # what an earlier job of an in-process sweep left in reference cycles
    with warnings.catch_warnings():  # isinstance() pokes deprecated lazy objects on the heap
        warnings.simplefilter("ignore")
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    inner = {id(m) for model in models for m in model.modules() if m is not model}
    return sum(id(model) not in inner for model in models)


def release(trainer: Any) -> None:
    """Free the job's models, and its colocated vLLM engine (release_vllm), before the next job
    of an in-process sweep starts. The CUDA cache is emptied only where CUDA was initialised:
    a CPU job on a GPU host never touches it (torch.cuda.is_available() would load the driver)."""
    import gc

    import torch

    release_vllm(trainer, alone=trainer.accelerator.num_processes == 1)
    trainer.model = trainer.model_wrapped = None
    for name in ("ref_model", "accelerator"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def release_vllm(trainer: Any, alone: bool) -> None:
    """TRL keeps its vLLM engine in `trainer.vllm_generation` (trl/generation/vllm_generation.py:
    290-369): colocated, an `llm` on this process's GPU with its own model-parallel groups and,
    with tensor_parallel_size > 1, a `tp_group` of torch's; in server mode a client whose
    communicator holds a socket the server waits on. Freed here, as vLLM's own clean-up does:
    the engine dropped, vLLM's parallel groups destroyed, and for a job of one process (where
    vLLM's external launcher started torch's process group itself: no accelerate group exists)
    its distributed environment too, so the next in-process job's engine starts afresh instead of
    meeting the old engine's memory and groups. `alone`: the job has one process. vLLM is not
    installed here: this is asserted against stand-ins only (tests/test_gpu_paths.py)."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None:
        return
    client = getattr(generation, "vllm_client", None)
    if client is not None:
        client.close_communicator()
    tp_group = getattr(generation, "tp_group", None)
    if getattr(generation, "llm", None) is not None:
        generation.llm = None
        trainer.vllm_generation = None
        del generation
        import gc

        gc.collect()  # the engine's memory is freed with its last reference
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        if tp_group is not None and not alone:
            import torch.distributed as dist

            dist.destroy_process_group(tp_group)
        if alone:
            destroy_distributed_environment()
    trainer.vllm_generation = None
