"""Distributed training: real DDP (gloo, 2 processes on the CPU, launched by torchrun) logs
one run from rank zero, every point once, with both ranks' system samples; rank detection
and the silent ranks' no-op calls."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import tracelet
from tracelet.distributed import RankInfo, current_rank

torch = pytest.importorskip("torch")

DDP_LOOP = """
    import sys, time
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.tensorboard import SummaryWriter
    import tracelet

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    exp = tracelet.init(project="ddp", run_name="ddp-run", metrics_interval=0.2)
    assert tracelet.get_active_experiment() is exp and exp.rank.rank == rank
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    tracelet.watch(model.module, log_freq=5)
    writer = SummaryWriter(log_dir=f"tensorboard/rank{rank}")
    for step in range(20):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracelet.log({"loss": loss, "rank": float(rank)})  # a tensor, as users log it
        writer.add_scalar("tb/loss", loss.item(), step)
        tracelet.step()
        time.sleep(0.08)  # (a few system samples on both ranks)
    writer.close()
    exp.log_artifact(__file__)
    tracelet.finish()
    dist.barrier()
    dist.destroy_process_group()
"""

LIGHTNING_FIT = """
    import torch, lightning
    from torch.utils.data import DataLoader, TensorDataset
    from tracelet.integrations import TraceletLogger

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            (x,) = batch
            loss = self.layer(x).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(160, 4)), batch_size=4)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=20, log_every_n_steps=1,
        logger=TraceletLogger(project="ddp", run_name="lightning-ddp"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Tiny(), data)
"""


def torchrun(script: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in 2 processes under the real launcher (``torch.distributed.run``)."""
    path = cwd / "train.py"
    path.write_text(textwrap.dedent(script))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*launcher, "--nproc-per-node", "2", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
@pytest.mark.collectors
def test_ddp_logs_one_run_every_point_once_with_both_ranks_system_samples(tmp_path, read_store):
    torchrun(DDP_LOOP, tmp_path)
    store = read_store()
    (run,) = store.list_runs()
    assert (run.name, run.project, run.status.value) == ("ddp-run", "ddp", "finished")
    for name in ("loss", "rank", "tb/loss"):
        points = store.metrics(run.id, name)
        assert sorted(p[2] for p in points) == list(range(20)), name
    assert {p[1] for p in store.metrics(run.id, "rank")} == {0.0}, "rank zero's points only"
    names = set(store.metric_names(run.id))
    assert {"system/cpu_percent", "system/rank1/cpu_percent"} <= names
    assert "system/rank1/process_rss_gb" in names
    assert any(n.startswith("grad/") for n in names), "watch on rank zero"
    assert [a.artifact_path for a in store.artifacts(run.id)] == ["train.py"]


@pytest.mark.slow
def test_lightning_ddp_logs_one_run_every_step_once(tmp_path, read_store):
    pytest.importorskip("lightning")
    torchrun(LIGHTNING_FIT, tmp_path)
    store = read_store()
    (run,) = store.list_runs()
    assert run.name == "lightning-ddp"
    steps = sorted(p[2] for p in store.metrics(run.id, "train_loss"))
    assert steps == sorted(set(steps))
    assert len(steps) == 20


@pytest.mark.slow
@pytest.mark.collectors
def test_log_all_ranks_gives_each_rank_its_run_in_one_group(tmp_path, read_store, monkeypatch):
    monkeypatch.setenv("TRACELET_LOG_ALL_RANKS", "1")
    torchrun(
        DDP_LOOP.replace("metrics_interval=0.2", "metrics_interval=0.2, track_git=False"), tmp_path
    )
    store = read_store()
    runs = sorted(store.list_runs(), key=lambda r: r.name)
    assert [r.name for r in runs] == ["ddp-run-rank0", "ddp-run-rank1"]
    for rank, run in enumerate(runs):
        assert store.tags(run.id)["tracelet.group"] == "ddp-run"
        assert store.tags(run.id)["tracelet.rank"] == str(rank)
        assert {p[1] for p in store.metrics(run.id, "rank")} == {float(rank)}
        assert len(store.metrics(run.id, "loss")) == 20
        assert not [n for n in store.metric_names(run.id) if n.startswith("system/rank")]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, RankInfo()),
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, RankInfo(3, 1, 8, "RANK")),
        (
            {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "6"},
            RankInfo(5, 1, 6, "SLURM_PROCID"),
        ),
        ({"RANK": "1", "SLURM_PROCID": "4", "WORLD_SIZE": "2"}, RankInfo(1, 0, 2, "RANK")),
    ],
)
def test_the_rank_comes_from_the_launcher_s_variables(environ, expected):
    assert current_rank(environ) == expected


def test_a_rank_is_decided_when_the_run_starts_not_at_import(monkeypatch, read_store):
    exp = tracelet.Experiment("later")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    exp.start()
    assert exp.rank == RankInfo(1, 0, 2, "RANK")
    exp.stop()


def test_on_another_rank_every_call_is_a_no_op_that_never_raises(monkeypatch, tmp_path, store_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "weights.bin").write_bytes(b"w")
    exp = tracelet.start_logging("quiet rank", backend=["local", "mlflow"])
    assert tracelet.get_active_experiment() is exp
    assert exp.is_running
    exp.log_metric("loss", torch.tensor(0.5), 0)  # a tensor, no integration attached
    tracelet.log({"loss": 1, "acc": torch.tensor([0.5])})
    exp.log_params({"lr": 0.1})
    exp.log_text("notes", "hello")
    exp.log_image("sample", b"not even an image")
    exp.log_histogram("weights", [1.0, 2.0])
    assert exp.log_artifact(tmp_path / "weights.bin") == {}
    assert tracelet.step() == 1
    tracelet.watch(torch.nn.Linear(2, 2))
    exp.checkpoint()
    assert exp.flush()
    tracelet.stop_logging()
    assert tracelet.get_active_experiment() is None
    assert not store_path.exists(), "a rank that does not log writes no store"


class FailingOnce:
    """A store whose next ``set`` fails (fault injection); everything else is the real one."""

    def __init__(self, store):
        self.store, self.fail = store, False

    def set(self, key, value):
        if self.fail:
            self.fail = False
            raise RuntimeError("the store's server did not answer")
        self.store.set(key, value)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_the_rank_channel_carries_each_rank_s_latest_sample_and_never_grows():
    from torch.distributed import HashStore, PrefixStore

    from tracelet.distributed import RankChannel

    shared = PrefixStore("tracelet/system", HashStore())  # (c10d's in-process store)
    zero = RankChannel(shared, RankInfo(0, 0, 3, "RANK"))
    one = RankChannel(FailingOnce(shared), RankInfo(1, 1, 3, "RANK"))
    assert zero.receive() == {}
    one.send({"cpu_percent": 10.0})
    one.send({"cpu_percent": 20.0})
    assert zero.receive() == {1: {"cpu_percent": 20.0}}
    assert zero.receive() == {}, "nothing new"
    one.store.fail = True
    with pytest.raises(RuntimeError):
        one.send({"cpu_percent": 30.0})  # (SamplePublisher drops it)
    one.send({"cpu_percent": 40.0})
    assert zero.receive() == {1: {"cpu_percent": 40.0}}, "a failed send leaves no hole"
    assert shared.num_keys() <= 2
