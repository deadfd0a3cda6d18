"""The end-of-run generation eval stage's memory (issue 25): it starts after training's state is
freed, judges the policy in the dtype it was saved in, computes both sides' log-probs in the
run's autocast dtype and without the full-vocabulary logits, and holds reward models and the
reference on the GPU only while they compute. GPU moves are asserted on stand-ins (no GPU
here); the figures are the bench's (eval_memory)."""

from __future__ import annotations

import dataclasses
import gc

import pytest
from conftest import TINY_MODEL

from rlhf.config.validate import validate
from rlhf.launch.compose import compose_job, resolved_config


def test_the_stage_starts_after_training_state_is_freed(tmp_path, monkeypatch):
    """When the stage begins, no optimizer (with its state) is alive, the policy holds no
    gradients, the trainer holds neither optimizer, scheduler nor wrappers, and it judges the
    unwrapped trained policy."""
    import torch

    from rlhf.job import runner
    from rlhf.judge import stage
    from rlhf.run import rundir

    run_dir = tmp_path / "run"
    rundir.prepare(run_dir, resolved_config(compose_job([
        f"cache_dir={tmp_path / 'cache'}", "method.max_steps=2", "dataset.num_rows=32", "dataset.eval=[]",
        "evaluate.num_prompts=4", "evaluate.samples_per_prompt=1", "evaluate.max_new_tokens=4"])))
    trainers, seen = [], {}
    real_build, real_evaluate = runner.build, stage.Stage.evaluate_policy
    monkeypatch.setattr(runner, "build", lambda job, callbacks: trainers.append(real_build(job, callbacks))
                        or trainers[-1])

    def evaluate_policy(self, policy, reference, out_dir=None, step=None):
        gc.collect()
        trainer = trainers[0]
        seen.update(optimizers=[o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)],
                    grads=[n for n, p in policy.named_parameters() if p.grad is not None],
                    held=(trainer.optimizer, trainer.lr_scheduler, trainer.callback_handler.optimizer,
                          trainer.accelerator._optimizers, trainer.accelerator._schedulers),
                    policy=policy, model=trainer.model)
        return real_evaluate(self, policy, reference, out_dir, step)

    monkeypatch.setattr(stage.Stage, "evaluate_policy", evaluate_policy)
    runner.train(run_dir)
    assert seen["optimizers"] == [] and seen["grads"] == []
    assert seen["held"] == (None, None, None, [], [])
    assert seen["model"] is seen["policy"] and isinstance(seen["policy"], torch.nn.Module)
    memory = rundir.read_metrics(run_dir)["generation"]["memory"]
    assert 0 < memory["at_start_mib"] <= memory["peak_mib"], memory


@pytest.mark.parametrize("overrides,dtype", [
    (("hardware.precision=bf16", "model.dtype=auto"), "bfloat16"),  # fp32-trained weights, saved in bf16
    (("hardware.precision=bf16", "model.dtype=auto", "peft=lora"), "float32"),  # an adapter as it trained
    (("model.dtype=auto",), "float32"),  # no autocast: saved and judged as trained
])
def test_the_policy_in_memory_is_judged_in_the_dtype_it_was_saved_in(overrides, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.job.runner import as_saved

    run = validate(compose_job(list(overrides)))
    policy = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    as_saved(run, policy)
    assert {p.dtype for p in policy.parameters()} == {getattr(torch, dtype)}


def _prompts_and_completions():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.judge import generate

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True)
               for q in ("Name a fruit.", "Which animal do you like best of all?")]
    decoding = dict(max_new_tokens=10, temperature=0.7, top_p=1.0, samples_per_prompt=3, seed=3, batch_size=4)
    return model, tokenizer, prompts, generate.sample(model, tokenizer, prompts, decoding)


def _full_logits_logps(model, tokenizer, prompts, completions, temperature):
    """The log-probs from the whole (batch, length, vocabulary) logits, one completion at a time."""
    import torch

    out = []
    with torch.no_grad():
        for c in completions:
            prompt = tokenizer(prompts[c.prompt_index], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + c.ids])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float() / temperature, -1)
            out.append(float(logps[len(prompt) - 1:].gather(-1, ids[0, len(prompt):, None]).sum()))
    return out


def test_log_probs_come_without_the_full_vocabulary_logits_and_equal_them():
    """TRL's fused head (rlhf.trl.fused_logps): the output layer's module never runs (it would
    make the batch's whole logits), the sums equal the full-logits computation on left-padded
    batches, and the model's own forward is back afterwards, for a PEFT model with its adapter
    on and off too."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf.judge import generate

    model, tokenizer, prompts, completions = _prompts_and_completions()
    assert len({len(c.ids) for c in completions}) > 1 or len({len(p) for p in prompts}) > 1  # padding happens
    calls = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape)))
    fused = generate.sequence_logps(model, tokenizer, prompts, completions, 0.7, batch_size=4)
    assert calls == []
    hook.remove()
    assert fused == pytest.approx(_full_logits_logps(model, tokenizer, prompts, completions, 0.7), rel=1e-5)
    assert "forward" not in model.__dict__  # the class's forward again: generation is unchanged

    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    on = generate.sequence_logps(lora, tokenizer, prompts, completions, 0.7, batch_size=4)
    assert on == pytest.approx(_full_logits_logps(lora, tokenizer, prompts, completions, 0.7), rel=1e-5)
    with lora.disable_adapter():
        off = generate.sequence_logps(lora, tokenizer, prompts, completions, 0.7, batch_size=4)
    assert off == pytest.approx(fused, rel=1e-5) and on != pytest.approx(off, rel=1e-3)


def test_the_policy_and_its_reference_compute_in_one_dtype():
    """A policy that trained fp32 weights under bf16 autocast, judged against its starting model
    as a frozen copy (bf16): judged as trained, the two differ by their precisions alone, a
    KL of nothing but rounding; judged as saved (bf16), under the run's autocast, identical
    weights give identical log-probs."""
    import torch

    from rlhf.job.runner import as_saved
    from rlhf.judge import generate
    from rlhf.judge.stage import Stage
    from rlhf.models.loading import frozen_copy_dtype

    model, tokenizer, prompts, completions = _prompts_and_completions()
    run = validate(compose_job(["hardware.precision=bf16", "model.dtype=auto"]))
    stored = frozen_copy_dtype(run.model, run.hardware, run.peft.adapter)[0]
    reference = type(model).from_pretrained(TINY_MODEL, dtype=getattr(torch, stored))
    args = (tokenizer, prompts, completions, 0.7, 4)

    def gaps() -> list[float]:
        with Stage(run, None, [], tokenizer).autocast():
            assert torch.is_autocast_enabled("cpu")
            mine, theirs = generate.sequence_logps(model, *args), generate.sequence_logps(reference, *args)
        return [abs(a - b) for a, b in zip(mine, theirs)]

    assert max(gaps()) > 1e-3  # as trained: fp32 against bf16
    as_saved(run, model)
    assert max(gaps()) == 0.0
    fp32 = validate(compose_job([]))
    with Stage(fp32, None, [], tokenizer).autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert frozen_copy_dtype(fp32.model, fp32.hardware, fp32.peft.adapter)[0] == "float32" == fp32.model.dtype


class _Placed:
    """A stand-in model that records where it is moved."""

    def __init__(self, moves):
        self.moves = moves

    def to(self, device):
        self.moves.append(device)
        return self


def test_reward_models_and_the_reference_are_on_the_gpu_only_while_they_compute(monkeypatch):
    from rlhf.judge import scorers as scoring
    from rlhf.judge import stage

    gpu = validate(compose_job(["hardware=gpu", "model.dtype=auto"]))  # bf16 autocast, weights as a preset loads them
    moves, scored_on = [], []
    reward = stage.scoring.Scorer("rm", "reward_model", "some/rm", model=_Placed(moves), tokenizer=None)
    monkeypatch.setattr(scoring, "score", lambda scorer, *a: scored_on.append(moves[-1]) or [0.0])
    judge = stage.Stage(gpu, None, [reward], None)
    judge.side([object()])
    assert scored_on == ["cuda"] and moves == ["cuda", "cpu"]  # there to score, back after

    reference = stage.Reference(gpu)
    loaded = []
    monkeypatch.setattr("rlhf.models.loading.load_model",
                        lambda config, hardware, what, dtype=None: loaded.append(dtype) or _Placed(moves))
    moves.clear()
    for _ in range(2):  # two mid-training evals: loaded once, on the GPU only inside
        with reference.model() as model:
            assert moves[-1] == "cuda" and isinstance(model, _Placed)
    assert moves == ["cuda", "cpu", "cuda", "cpu"] and len(loaded) == 1
    assert loaded[0][0] == "bfloat16"  # a frozen copy in the autocast dtype
    reference.release()
    assert reference.loaded is None
    cpu = stage.Reference(validate(compose_job([])))
    moves.clear()
    with cpu.model():
        pass
    assert moves == []  # a CPU run moves nothing


def test_a_sharded_qlora_runs_eval_loads_its_base_quantised_on_one_gpu(monkeypatch, tmp_path):
    """The base of a QLoRA run under FSDP was loaded unquantised by the stage (a 70B base in bf16
    on one GPU); now as it trained, 4-bit, placed by bitsandbytes on this process's GPU."""
    from rlhf.judge import stage

    composed = resolved_config(compose_job(["hardware=gpu_fsdp_8", "peft=lora"]))
    from test_gpu_paths import _qlora_run

    run = _qlora_run(composed)
    (tmp_path / "adapter_config.json").write_text("{}")
    asked = []
    monkeypatch.setattr("rlhf.models.loading.load_model",
                        lambda model, hardware, what, adapter=None: asked.append((adapter, hardware.distributed))
                        or _Placed([]))
    monkeypatch.setattr("peft.PeftModel.from_pretrained", lambda base, path: base)
    policy = stage.load_policy(run, tmp_path)
    assert asked == [("qlora", "none")] and policy.moves == []  # quantised for one process, not moved
    lora = dataclasses.replace(run, peft=dataclasses.replace(run.peft, adapter="lora"))
    asked.clear()
    assert stage.load_policy(lora, tmp_path).moves == ["cuda"] and asked == [(None, "fsdp")]


def test_evaluating_on_a_gpu_host_does_not_start_cuda_for_a_cpu_job(monkeypatch):
    import torch

    from rlhf.judge.generate import evaluating

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("a CPU job touched CUDA"))
    model = torch.nn.Linear(2, 2)
    with evaluating(model):
        assert not model.training
    assert model.training
