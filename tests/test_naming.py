"""Run dir names: after the job's overrides, safe, bounded, the same for the same overrides."""

from __future__ import annotations

import re

from rlhf.run.naming import NAME_LIMIT, job_number, overrides_suffix
from rlhf.run.rundir import job_dirs


def test_plain_overrides_are_the_name_as_hydra_writes_them():
    assert overrides_suffix("") == ""
    assert overrides_suffix("method.beta=0.1,method.loss_type=ipo") == "_method.beta=0.1,method.loss_type=ipo"


def test_paths_and_brackets_never_reach_the_name_and_different_overrides_stay_apart():
    a = overrides_suffix("dataset.eval=[],dataset.path=/data/a/train.jsonl")
    b = overrides_suffix("dataset.eval=[],dataset.path=/data/b/train.jsonl")
    assert re.fullmatch(r"_dataset\.eval=_,dataset\.path=train\.jsonl-[0-9a-f]{8}", a), a
    assert a != b and a == overrides_suffix("dataset.eval=[],dataset.path=/data/a/train.jsonl")
    for odd in ("model.name_or_path=Qwen/Qwen2.5-0.5B", "x='a b'", "a=../../etc", "k=[/x/y.jsonl,/z/w.jsonl]",
                "k={a: 1}", "k=é*?:\\\\|<>\"\n"):
        name = overrides_suffix(odd)
        assert re.fullmatch(r"_[A-Za-z0-9._,=+-]+", name) and "/" not in name, (odd, name)


def test_a_long_name_is_cut_and_ends_in_a_hash_of_the_whole():
    many = ",".join(f"method.knob_{i}={i / 7}" for i in range(40))
    name = overrides_suffix(many)
    assert len(name) == 1 + NAME_LIMIT and re.search(r"-[0-9a-f]{8}$", name)
    assert name != overrides_suffix(many + ",seed=1") and name.startswith("_method.knob_0=0.0,")


def test_sweep_job_dirs_sort_by_their_number(tmp_path):
    for name in ("10_method.beta=0.3", "2_method.beta=0.2", "0", "x", "1_method.beta=0.1", "3_no_record"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
    (tmp_path / "3_no_record" / ".hydra").rmdir()
    assert [p.name for p in job_dirs(tmp_path)] == ["0", "1_method.beta=0.1", "2_method.beta=0.2",
                                                    "10_method.beta=0.3", "x"]
    assert job_number(tmp_path / "10_method.beta=0.3") == 10 and job_number(tmp_path / "x") is None
    assert job_number(tmp_path / "12-00-00_seed=1") is None  # a single run's time is no job number


def test_the_launchers_companion_deletions_name_no_difference():
    """`~evaluate`/`~tuning`, which the launcher adds to every job of a command that leaves their
    option, never reach a name: the name says what the user typed; other deletions stay."""
    typed = "dataset.eval=[],dataset.path=/d/b.jsonl,method.max_steps=2"
    for added in (",~evaluate=null", ",~tuning=null", ",~evaluate", ",~evaluate=null,~tuning=null"):
        assert overrides_suffix(typed + added) == overrides_suffix(typed), added
    assert overrides_suffix("~logger=null,seed=1").startswith("__logger=null,seed=1-")
    assert overrides_suffix("k=[a,~evaluate],seed=1") != overrides_suffix("seed=1")  # a value, not a deletion
