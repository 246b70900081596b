"""The resumable sampler, distributed helpers in a single process, and the CSV metric log."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samadapt.engine import distributed as d
from samadapt.engine.logging import CsvLog, MetricLogger
from samadapt.errors import UserError


def _sampler(n, world, rank, **kw):
    return d.ResumableDistributedSampler(list(range(n)), num_replicas=world, rank_=rank, seed=5, **kw)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 40), world=st.integers(1, 3), batch=st.integers(1, 4), done=st.integers(0, 10))
def test_resumed_sampler_continues_exactly_where_it_stopped(n, world, batch, done):
    for rank in range(world):
        full = list(_sampler(n, world, rank))
        done_here = min(done, len(full) // batch)
        original = _sampler(n, world, rank)
        original.set_epoch(0)
        original.advance(done_here * batch)
        resumed = _sampler(n, world, rank)
        resumed.load_state_dict(original.state_dict())
        assert list(resumed) == full[done_here * batch:]
        assert len(resumed) == len(full) - done_here * batch


def test_resume_on_another_world_size_covers_the_rest_once():
    before = _sampler(20, 2, 0)
    before.advance(3)  # 6 samples consumed by 2 ranks
    order = d.ResumableDistributedSampler(list(range(20)), num_replicas=1, rank_=0, seed=5)
    consumed = list(order)[:6]
    after = []
    for rank in range(4):
        s = _sampler(20, 4, rank)
        s.load_state_dict(before.state_dict())
        after += list(s)
    assert set(consumed + after) == set(range(20)) and len(after) == 16  # 14 left, padded to 4 x 4
    assert len(s) == 4


def test_new_epoch_starts_from_the_beginning_with_a_new_order():
    s = _sampler(10, 1, 0)
    first = list(s)
    s.advance(4)
    s.set_epoch(1)
    second = list(s)
    assert len(second) == 10 and sorted(second) == sorted(first) and second != first


def test_sampler_refuses_a_state_with_another_seed():
    state = _sampler(10, 1, 0).state_dict() | {"seed": 6}
    with pytest.raises(UserError, match="seed"):
        _sampler(10, 1, 0).load_state_dict(state)


def test_single_process_helpers_are_no_ops():
    ctx = d.init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True) and d.is_main()
    assert d.all_reduce_mean(2.5) == 2.5 and torch.equal(d.all_reduce_mean(torch.ones(2)), torch.ones(2))
    model = torch.nn.Linear(1, 1)
    assert d.wrap_ddp(model) is model and d.unwrap(model) is model
    d.barrier()


def test_seed_everything_is_reproducible():
    d.seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    assert d.seed_everything(11, per_rank=True) == 11  # rank 0: no offset
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_torchrun_relaunch_command(monkeypatch):
    cmd = d.torchrun_command(["finetune", "--epochs", "3"], nproc=2)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[-4:] == ["samadapt", "finetune", "--epochs", "3"]
    with pytest.raises(UserError, match="remove --devices"):
        d.launch_torchrun(["finetune", "--devices", "2"], 2)
    monkeypatch.setenv("LOCAL_RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="inside torchrun"):
        d.launch_torchrun(["finetune"], 2)
    with pytest.raises(UserError, match="must be >= 1"):
        d.torchrun_command([], 0)


def test_world_size_without_torchrun_variables_is_a_user_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="torchrun"):
        d.init_distributed()


def test_csv_log_drops_rows_after_the_resumed_step_and_a_torn_last_line(tmp_path):
    path = tmp_path / "train.csv"
    log = CsvLog(path)
    for step in range(1, 6):
        log.append({"step": step, "loss": step / 10})
    with open(path, "a") as handle:
        handle.write("6,0.")  # the process died while writing this row
    resumed = CsvLog(path, resume_after_step=3)
    resumed.append({"step": 4, "loss": 0.44})
    assert path.read_text().splitlines() == ["step,loss", "1,0.1", "2,0.2", "3,0.3", "4,0.44"]


def test_csv_log_widens_its_header_for_new_metrics(tmp_path):
    log = CsvLog(tmp_path / "epoch.csv")
    log.append({"step": 1, "loss": 1.0})
    log.append({"step": 2, "loss": 0.5, "dice": 0.7})
    assert (tmp_path / "epoch.csv").read_text().splitlines() == ["step,loss,dice", "1,1.0,", "2,0.5,0.7"]


def test_metric_logger_writes_tensorboard_and_nothing_when_disabled(tmp_path):
    logger = MetricLogger(tmp_path / "on", tensorboard=True)
    logger.log("train", 1, {"loss": 0.5}, epoch=1)
    logger.close()
    assert any((tmp_path / "on" / "tensorboard").iterdir())
    assert logger.rows("train") == [{"step": "1", "epoch": "1", "loss": "0.5"}]
    off = MetricLogger(tmp_path / "off", enabled=False)
    off.log("train", 1, {"loss": 0.5})
    assert not (tmp_path / "off").exists()
