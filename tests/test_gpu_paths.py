"""GPU-path choices asserted without a GPU: the dtype a trained model loads in, where a 4-bit
model goes per strategy and rank, what TRL needs to reload the policy itself, and what the
shared reference log-probs are keyed by and who decides their reuse; and (issue 25) the hub
presets' dtype, the frozen copies' dtype and device map, which rank reads the checkpoint under
FSDP, the dtype and writer of the saved model, reward runs, release(), evaluate's processes and
SLURM's per-task binding. None of these has run on a GPU here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import TINY_MODEL
from rlhf.launch.compose import compose_job
from rlhf.config.schema import HardwareConfig, ModelConfig
from rlhf.config.validate import validate


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory) -> Path:
    """The tiny model saved in bf16, as most hub checkpoints are."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.bfloat16).save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY_MODEL).save_pretrained(path)
    return path


def test_weights_that_all_train_load_in_fp32_and_frozen_ones_as_stored(bf16_checkpoint):
    import torch

    from rlhf.models.loading import load_model

    model = ModelConfig(name_or_path=str(bf16_checkpoint))
    hardware = HardwareConfig()

    def dtypes(config, adapter):
        return {p.dtype for p in load_model(config, hardware, adapter=adapter).parameters()}

    assert dtypes(model, "none") == {torch.float32}  # full fine-tuning: fp32 weights, as TRL loads them
    assert dtypes(model, "lora") == {torch.bfloat16}  # a frozen base keeps the checkpoint's dtype
    assert dtypes(model, None) == {torch.bfloat16}  # a model only read, too
    assert dtypes(dataclasses.replace(model, dtype="bfloat16"), "none") == {torch.bfloat16}  # asked for


@pytest.mark.parametrize("strategy,local_rank", [("none", "0"), ("ddp", "3"), ("fsdp", "1"), ("deepspeed_zero3", "1"),
                                                  ("deepspeed_zero2", "2")])
def test_a_4bit_model_goes_on_its_ranks_gpu_or_is_stored_to_shard(strategy, local_rank):
    import torch

    from rlhf.models.loading import model_kwargs

    hardware = HardwareConfig(accelerator="cuda", precision="bf16", gpus_per_node=4,
                              processes_per_node=1 if strategy == "none" else 4, distributed=strategy)
    kwargs = model_kwargs(ModelConfig(), hardware, "qlora", environ={"LOCAL_RANK": local_rank})
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    if strategy in ("fsdp", "deepspeed_zero3"):
        # sharded: bf16 storage the strategy can flatten, no device_map (the strategy places shards)
        assert quantization.bnb_4bit_quant_storage == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
        assert "device_map" not in kwargs
    else:
        # bitsandbytes would put every rank's model on GPU 0; accelerate then refuses it
        assert kwargs["device_map"] == {"": int(local_rank)}
        assert quantization.bnb_4bit_quant_storage == torch.uint8


@pytest.mark.parametrize("method", ["dpo", "grpo", "rloo", "kto"])
def test_trl_reloads_the_policy_at_its_revision_and_with_its_remote_code(method, tmp_path):
    """GRPO/RLOO with beta > 0 and DPO's precompute under FSDP load the policy's checkpoint
    again inside TRL, from args.model_init_kwargs and args.trust_remote_code."""
    from rlhf.job.runner import trl_arguments

    run = validate(compose_job([f"method={method}", "model.trust_remote_code=true"]))
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, revision="3f2a1c"))
    args = trl_arguments(run, tmp_path, has_eval=False)
    assert args.trust_remote_code is True
    assert args.model_init_kwargs == {"revision": "3f2a1c"}
    plain = trl_arguments(validate(compose_job([f"method={method}"])), tmp_path, has_eval=False)
    assert plain.model_init_kwargs is None and plain.trust_remote_code is False


def test_trls_ignored_kwargs_warning_is_dropped_only_for_that_message():
    import logging

    from rlhf.job.runner import RELOAD_ONLY

    def record(message):
        return logging.LogRecord("trl.trainer.grpo_trainer", logging.WARNING, __file__, 0, message, (), None)

    assert not RELOAD_ONLY.filter(record("You passed `model_init_kwargs` to the `GRPOConfig`, but your model is "
                                         "already instantiated. The `model_init_kwargs` will be ignored."))
    assert RELOAD_ONLY.filter(record("You passed `quantization_config` to the trainer"))


# ---------------------------------------------------------------------------- shared reference log-probs

def test_the_shared_reference_key_holds_what_changes_the_values():
    from trl import DPOConfig

    from rlhf.trl.shared_reference import store_key

    def key(attention="sdpa", **fields):
        args = DPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, **fields)
        return store_key("train", "hash", 100, args, attention)

    base = key()
    for changed in (key(ld_alpha=0.5), key(max_length=512), key(padding_free=True), key(attention="eager"),
                    key(truncation_mode="keep_end")):
        assert changed != base
    assert key(beta=0.5, loss_type=["ipo"]) == base  # the loss reads them, the reference log-probs do not
    assert store_key("eval", "hash", 100, DPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False),
                     "sdpa") != base


def test_rank_zero_decides_reuse_for_every_rank(tmp_path):
    from rlhf.trl.shared_reference import rank_zero_sees

    written = tmp_path / "key"
    written.mkdir()
    (written / "dataset_info.json").write_text("{}")  # a concurrent job finished writing just now

    def from_rank_zero_that_saw_nothing(found, from_process):
        assert from_process == 0
        found[0] = False

    # This rank sees the store, rank 0 did not: both compute, through TRL's collectives together.
    assert rank_zero_sees(written, broadcast=from_rank_zero_that_saw_nothing) is False
    assert rank_zero_sees(written, broadcast=lambda found, from_process: None) is True
    assert rank_zero_sees(tmp_path / "absent", broadcast=lambda found, from_process: None) is False


# ---------------------------------------------------------------------------- issue 25: the first GPU run

HUB_PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml")
                     if p.stem != "tiny")


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_hub_presets_train_fp32_weights_and_keep_a_frozen_base_as_stored(preset):
    """A preset with dtype: bfloat16 made `model=<preset> hardware=gpu method=dpo` update bf16
    weights with AdamW, which rounds most updates at 5e-7 away (weights_dtype)."""
    import torch

    from rlhf.models.loading import model_kwargs, weights_dtype

    run = validate(compose_job([f"model={preset}", "hardware=gpu"]))
    assert weights_dtype(run.model, "none")[0] == "float32"
    assert model_kwargs(run.model, run.hardware, "none")["dtype"] == torch.float32
    assert model_kwargs(run.model, run.hardware, "lora")["dtype"] == "auto"  # the checkpoint's bf16
    assert model_kwargs(run.model, run.hardware, None)["dtype"] == "auto"


def test_a_frozen_reference_copy_is_stored_in_the_autocast_dtype(bf16_checkpoint):
    import torch

    from rlhf.models import reference

    def copy_dtypes(*overrides):
        run = validate(compose_job([f"model.name_or_path={bf16_checkpoint}", "model.dtype=auto",
                                    "method.precompute_ref_log_probs=false", *overrides]))
        chosen = reference.load(run, reference.choose(run))
        assert chosen.kind == reference.SEPARATE_COPY
        return {p.dtype for p in chosen.model.parameters()}

    assert copy_dtypes("hardware=gpu") == {torch.bfloat16}  # the policy trains fp32 weights beside it
    assert copy_dtypes("hardware=cpu") == {torch.float32}  # no autocast: the policy's own, as before
    assert copy_dtypes("hardware=gpu", "model.dtype=float32") == {torch.float32}  # asked for


@pytest.mark.parametrize("option,device_map", [("gpu_fsdp_8", None), ("gpu_ddp_8", "unset"), ("gpu", "unset")])
def test_trls_reference_reload_under_fsdp_loads_on_the_cpu_not_spread_over_the_gpus(option, device_map, tmp_path,
                                                                                    monkeypatch):
    """TRL sets device_map=None for its reloaded reference under DDP and DeepSpeed only, and
    create_model_from_path picks "auto" on a GPU otherwise: each FSDP rank's copy would be
    spread over every GPU of the node. Here TRL's own create_model_from_path is called with the
    reload's kwargs as TRL builds them, on a process that looks like a GPU rank."""
    import transformers
    from trl.trainer import utils as trl_utils

    from rlhf.job.runner import reference_init_kwargs

    run = validate(compose_job(["method=grpo", "method.beta=0.04", f"hardware={option}",
                                "model=qwen2.5-0.5b-instruct"]))
    init = reference_init_kwargs(run)
    assert init.get("device_map", "unset") == device_map
    assert init["dtype"] == "bfloat16"  # not the fp32 of the policy, which TRL would use
    seen = {}
    monkeypatch.setattr(trl_utils, "PartialState",
                        lambda: type("GpuRank", (), {"device": type("D", (), {"type": "cuda"})()})())
    monkeypatch.setattr(transformers.LlamaForCausalLM, "from_pretrained",
                        classmethod(lambda cls, name, **kwargs: seen.update(kwargs)))
    trl_utils.create_model_from_path(str(TINY_MODEL), **init)
    import torch

    assert seen["dtype"] == torch.bfloat16
    assert seen["device_map"] == ("auto" if device_map == "unset" else None)


def test_the_reload_kwargs_reach_trls_config_only_where_they_change_something():
    from trl import GRPOConfig

    from rlhf.job.runner import reload_kwargs

    def init(*overrides):
        run = validate(compose_job(["method=grpo", "method.beta=0.04", "model.dtype=auto", *overrides]))
        return reload_kwargs(run, GRPOConfig).get("model_init_kwargs")

    assert init("hardware=gpu_fsdp_8") == {"dtype": "bfloat16", "device_map": None}
    assert init("hardware=gpu") == {"dtype": "bfloat16"}
    assert init("hardware=cpu_2proc_fsdp") == {"device_map": None}
    assert init("hardware=cpu") is None  # the embedded CPU path is unchanged


@pytest.mark.parametrize("overrides,rank0", [
    ((), True),
    (("peft=lora", "method.precompute_ref_log_probs=false"), True),
    (("peft=lora", "method.precompute_ref_log_probs=true"), False),  # TRL reads the policy in __init__
    (("peft=qlora", "method.precompute_ref_log_probs=false"), False),  # accelerate skips its broadcast for 4-bit
    (("hardware=gpu_ddp_8",), False),
    (("hardware=gpu",), False),
])
def test_rank_zero_alone_reads_the_checkpoint_under_fsdp_where_accelerate_can_broadcast_it(overrides, rank0):
    from rlhf.job.runner import rank0_loads
    from rlhf.cluster import distributed

    composed = compose_job(["hardware=gpu_fsdp_8", "model=qwen2.5-0.5b-instruct", *overrides])
    run = validate(composed) if "peft=qlora" not in overrides else _qlora_run(composed)
    assert rank0_loads(run) is rank0
    assert distributed.trl_kwargs(run.hardware, rank0_loads(run)).get("fsdp_config", {}).get(
        "cpu_ram_efficient_loading", False) is rank0


def _qlora_run(composed):
    """A QLoRA run validated as on a GPU host (bitsandbytes is not installed here)."""
    import dataclasses

    plain = dict(composed)
    run = validate({**plain, "peft": {**plain["peft"], "adapter": "lora"}})
    return dataclasses.replace(run, peft=dataclasses.replace(run.peft, adapter="qlora"))


def test_a_skeleton_is_the_loaded_model_without_its_weights(tmp_path):
    """What the ranks other than 0 build: the same parameters (names, shapes, dtypes, ties) and
    the same buffers (the rotary frequencies are computed, not read), with no memory held for
    the weights."""
    import json

    import torch

    from rlhf.models.heads import CAUSAL_LM, SEQUENCE_CLASSIFICATION
    from rlhf.models.loading import layout, load_model, load_skeleton

    for head in (CAUSAL_LM, SEQUENCE_CLASSIFICATION):
        model = ModelConfig(name_or_path=str(TINY_MODEL))
        real = load_model(model, HardwareConfig(), adapter="none", head=head, pad_token_id=0, seed=1)
        built = load_skeleton(model, layout(real), head=head, pad_token_id=0)
        assert type(built) is type(real) and built.training == real.training
        shapes = lambda m: {n: (p.shape, p.dtype, p.device.type, p.requires_grad) for n, p in m.named_parameters()}
        assert shapes(built) == shapes(real)
        buffers = dict(real.named_buffers())
        assert {n: torch.equal(b, buffers[n]) for n, b in built.named_buffers()} == {n: True for n in buffers}
        # accelerate maps each parameter to its shard by data_ptr (0 for every meta tensor)
        assert len({p.data_ptr() for p in built.parameters()}) == len(list(built.parameters()))
        assert built.config.pad_token_id == 0
    assert built.score.weight.dtype == torch.float32
    lm = load_skeleton(model, layout(load_model(model, HardwareConfig(), adapter="none")))
    assert lm.get_input_embeddings().weight is lm.get_output_embeddings().weight  # tied, as loaded
    # A bigger architecture (~670 MB of fp32 weights): building it takes no memory for them.
    big = tmp_path / "big"
    big.mkdir()
    config = json.loads((TINY_MODEL / "config.json").read_text())
    config.update(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, vocab_size=32000, head_dim=64,
                  num_attention_heads=16, num_key_value_heads=16)
    (big / "config.json").write_text(json.dumps(config))
    shape = {"dtypes": {}, "training": False, "config_dtype": "float32"}
    probe = load_skeleton(ModelConfig(name_or_path=str(big)), {**shape, "dtypes": _all_float32(big)})
    weights = sum(p.numel() * p.element_size() for p in probe.parameters())
    del probe
    before = _resident_bytes()
    built = load_skeleton(ModelConfig(name_or_path=str(big)), {**shape, "dtypes": _all_float32(big)})
    assert weights > 600e6 and _resident_bytes() - before < 0.1 * weights
    assert sum(p.numel() * p.element_size() for p in built.parameters()) == weights


def _all_float32(model_dir):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    model.tie_weights()
    return {n: "float32" for n, _ in [*model.named_parameters(), *model.named_buffers()]}


def _resident_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_rank_zero_shares_what_it_loaded_and_its_failure(monkeypatch):
    """on_rank0: rank 0 loads and broadcasts the layout; the others build from it; a failure on
    rank 0 reaches them as an error instead of a wait."""
    import torch.distributed as dist

    from rlhf.cluster import distributed
    from rlhf.core.errors import RlhfError

    sent = []

    def broadcast(objects, src):
        assert src == 0
        if sent:  # this rank is not 0: it receives what rank 0 sent
            objects[0] = sent[0]
        else:
            sent.append(objects[0])

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    monkeypatch.setenv("RANK", "0")
    assert distributed.on_rank0(lambda: "weights", lambda shape: pytest.fail("rank 0 loads"),
                                lambda m: {"of": m}) == "weights"
    monkeypatch.setenv("RANK", "1")
    assert distributed.on_rank0(lambda: pytest.fail("rank 1 reads nothing"), lambda shape: ("built", shape),
                                lambda m: None) == ("built", {"of": "weights"})
    sent[:] = [{"failed": True}]
    with pytest.raises(RlhfError, match="rank 0 failed to load the model"):
        distributed.on_rank0(lambda: None, lambda shape: pytest.fail("nothing to build"), lambda m: None)
    monkeypatch.setenv("RANK", "0")
    sent.clear()

    def fails():
        raise OSError("no such file")

    with pytest.raises(OSError):
        distributed.on_rank0(fails, None, None)
    assert sent == [{"failed": True}]


# ---------------------------------------------------------------------------- the saved model

class _Accelerator:
    """What save_trained asks of accelerate, for one process holding whole weights."""

    def get_state_dict(self, model):
        return model.state_dict()

    def unwrap_model(self, model):
        return model


def _trainer(model, tokenizer, calls, fsdp=False, deepspeed=False):
    from types import SimpleNamespace

    return SimpleNamespace(model=model, accelerator=_Accelerator(), processing_class=tokenizer,
                           is_fsdp_enabled=fsdp, is_deepspeed_enabled=deepspeed,
                           is_world_process_zero=lambda: True, save_model=lambda out: calls.append(out))


@pytest.mark.parametrize("overrides,saved", [
    (("hardware=gpu", "model.dtype=auto"), "bfloat16"),  # trained in fp32 under bf16 autocast
    (("hardware=gpu", "model.dtype=auto", "peft=lora"), None),  # the adapter as it trained
    (("hardware=gpu", "model.dtype=float32"), None),  # asked for
    (("hardware=cpu", "model.dtype=auto"), None),  # no autocast
])
def test_the_final_model_is_saved_in_the_dtype_it_computed_in(overrides, saved):
    from rlhf.models.loading import saved_dtype

    run = validate(compose_job(list(overrides)))
    assert saved_dtype(run.model, run.hardware, run.peft.adapter) == saved


def test_a_bf16_run_saves_bf16_weights_with_their_ties(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.job.runner import save_trained

    run = validate(compose_job(["hardware=gpu", "model.dtype=auto"]))
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    calls = []
    save_trained(run, _trainer(model, AutoTokenizer.from_pretrained(TINY_MODEL), calls), tmp_path / "model")
    assert calls == []  # not the Trainer's save, which writes the fp32 weights
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert "lm_head.weight" not in saved  # tied to the embedding: written once, as before
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.model.embed_tokens.weight, model.model.embed_tokens.weight.to(torch.bfloat16))
    assert (tmp_path / "model" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("fsdp,deepspeed,overrides,trainers", [
    (False, False, ("hardware=cpu",), True),  # the embedded CPU path: the Trainer's own save, unchanged
    (True, False, ("hardware=cpu_2proc_fsdp",), False),  # sharded checkpoints: the Trainer's save writes nothing
    (False, True, ("hardware=gpu_zero3_8", "model.dtype=auto"), True),  # ZeRO-3 gathers 16-bit weights itself
])
def test_who_saves_the_final_model(fsdp, deepspeed, overrides, trainers, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.job.runner import save_trained

    run = validate(compose_job(list(overrides)))
    calls = []
    trainer = _trainer(AutoModelForCausalLM.from_pretrained(TINY_MODEL), AutoTokenizer.from_pretrained(TINY_MODEL),
                       calls, fsdp=fsdp, deepspeed=deepspeed)
    save_trained(run, trainer, tmp_path / "model")
    assert (calls == [str(tmp_path / "model")]) is trainers
    assert (tmp_path / "model" / "model.safetensors").is_file() is not trainers


# ---------------------------------------------------------------------------- reward runs, CPU jobs, vLLM

def test_a_reward_model_is_loaded_in_the_autocast_dtype_and_stays_on_a_cpu_jobs_device(monkeypatch, tmp_path):
    """A reward run dir (RewardRun) was moved whole to the GPU in its saved dtype, and a CPU job
    on a GPU host sent it there too (torch.cuda.is_available())."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.methods import online
    from rlhf.rewards import sources

    model_dir = tmp_path / "reward"
    AutoModelForSequenceClassification.from_pretrained(TINY_MODEL, num_labels=1).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(TINY_MODEL).save_pretrained(model_dir)
    source = sources.resolve(str(model_dir), "method.reward_funcs[0]")
    model, _ = sources.load_reward_model(source, "method.reward_funcs[0]", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    asked = []
    monkeypatch.setattr(sources, "load", lambda *a, **k: asked.append(k.get("dtype")) or ([], []))
    monkeypatch.setattr(sources, "resolve_all", lambda *a, **k: [])
    for hardware, dtype in (("hardware=gpu", "bfloat16"), ("hardware=cpu", None)):
        online.reward_inputs(validate(compose_job(["method=grpo", hardware])), ["prompt"])
        assert asked.pop() == dtype
    # A CPU job on a GPU host: CUDA is never touched, the model stays where accelerate's device is
    # (its state was set up by the TRL config, use_cpu=True, before any reward is computed).
    from accelerate import PartialState

    assert PartialState(cpu=True).device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_lazy_init", lambda: pytest.fail("a CPU job initialised CUDA"))
    run = sources.RewardRun(model, AutoTokenizer.from_pretrained(TINY_MODEL))
    assert run.place().type == "cpu"
    assert len(run(["a prompt"], ["a completion"])) == 1


def test_release_touches_cuda_only_where_it_was_initialised(monkeypatch):
    import torch

    from rlhf.job.runner import release

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    for initialised in (False, True):
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised)
        trainer = _released_trainer()
        release(trainer)
        assert trainer.model is None and trainer.accelerator is None
        assert emptied == ([True] if initialised else [])


def _released_trainer(**vllm):
    from types import SimpleNamespace

    return SimpleNamespace(model=object(), model_wrapped=object(), ref_model=object(),
                           accelerator=SimpleNamespace(num_processes=vllm.pop("processes", 1)), **vllm)


@pytest.mark.parametrize("processes", [1, 2])
def test_release_frees_a_colocated_vllm_engine_and_its_groups(processes, monkeypatch):
    """Without it the next in-process job's engine met the old one's memory and groups. vLLM is
    not installed here: its clean-up functions are stand-ins that record the order."""
    import sys
    import types

    import torch.distributed as dist

    from rlhf.job.runner import release

    order = []
    state = types.ModuleType("vllm.distributed.parallel_state")
    state.destroy_model_parallel = lambda: order.append("model parallel groups")
    state.destroy_distributed_environment = lambda: order.append("distributed environment")
    for name, module in (("vllm", types.ModuleType("vllm")), ("vllm.distributed", types.ModuleType("vllm.d")),
                         ("vllm.distributed.parallel_state", state)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: order.append(("tp group", group)))

    class Engine:
        def __del__(self):
            order.append("engine")

    generation = types.SimpleNamespace(llm=Engine(), tp_group="tp" if processes > 1 else None)
    trainer = _released_trainer(vllm_generation=generation, processes=processes)
    del generation
    release(trainer)
    assert trainer.vllm_generation is None
    if processes == 1:  # vLLM started torch's group itself: torn down too
        assert order == ["engine", "model parallel groups", "distributed environment"]
    else:  # the job's group stays (accelerate's); the tensor-parallel subgroup goes
        assert order == ["engine", "model parallel groups", ("tp group", "tp")]


def test_a_server_mode_client_closes_its_communicator():
    import types

    from rlhf.job.runner import release

    closed = []
    client = types.SimpleNamespace(close_communicator=lambda: closed.append(True))
    trainer = _released_trainer(vllm_generation=types.SimpleNamespace(vllm_client=client))
    release(trainer)
    assert closed == [True] and trainer.vllm_generation is None


def test_a_reward_run_is_partitioned_like_trls_reward_models_under_deepspeed():
    from types import SimpleNamespace

    from rlhf.job.runner import place_reward_runs
    from rlhf.rewards.sources import RewardRun

    run, function = RewardRun("model", None), (lambda **kw: [])
    for deepspeed, expected in ((True, ("prepared", "model")), (False, "model")):
        run.model = "model"
        trainer = SimpleNamespace(is_deepspeed_enabled=deepspeed, accelerator="acc", reward_funcs=[run, function])
        place_reward_runs(trainer, prepare=lambda model, accelerator: ("prepared", model))
        assert run.model == expected


# ---------------------------------------------------------------------------- evaluate, SLURM's binding

def test_evaluating_a_multi_gpu_run_dir_asks_for_one_process_and_one_gpu(tmp_path):
    from rlhf.cluster import devices
    from rlhf.launch.compose import resolved_config
    from rlhf.launch.evaluate import target_config
    from rlhf.run import rundir

    run_dir = tmp_path / "run"
    rundir.prepare(run_dir, resolved_config(compose_job(["hardware=gpu_fsdp_8", "model=qwen2.5-0.5b-instruct"])))
    (run_dir / rundir.MODEL_DIR).mkdir()
    run, _, _ = target_config(str(run_dir), [], str(tmp_path / "out"))
    hardware = run.hardware
    assert (hardware.world_size, hardware.distributed, hardware.gpus_per_node) == (1, "none", 1)
    assert (hardware.accelerator, hardware.precision) == ("cuda", "bf16")
    assert devices.job_gpus(hardware, {"CUDA_VISIBLE_DEVICES": "5"}).train == ["5"]


def test_slurm_binding_each_task_to_its_own_gpu_is_accepted():
    """srun --gpus-per-task=1: each of the 8 tasks of a node sees only its own GPU."""
    import torch

    from rlhf.cluster import devices
    from rlhf.core.errors import RlhfError
    from rlhf.models.loading import model_kwargs

    hardware = validate(compose_job(["hardware=gpu_ddp_8", "model=qwen2.5-0.5b-instruct"])).hardware
    task = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "3",
            "LOCAL_RANK": "3"}
    gpus = devices.job_gpus(hardware, task)
    assert gpus.train == ["3"] and "--gpus-per-task=1" in gpus.why
    with pytest.raises(RlhfError, match="needs 8 training GPU"):  # the node's view without the binding
        devices.job_gpus(hardware, {k: v for k, v in task.items() if k != "SLURM_GPUS_PER_TASK"})
    # A 4-bit model goes on the rank's one visible GPU (index 0), where accelerate puts the rank.
    qlora = dataclasses.replace(hardware, distributed="ddp")
    assert model_kwargs(ModelConfig(), qlora, "qlora", environ=task)["device_map"] == {"": 0}
    assert torch.bfloat16 == model_kwargs(ModelConfig(), qlora, "qlora", environ=task)[
        "quantization_config"].bnb_4bit_compute_dtype
