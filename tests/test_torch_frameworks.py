"""Lightning and Transformers (tracelet-torch): tiny models built from a config, trained a
few steps on the CPU, read back from the local store and a real MLflow server."""

from __future__ import annotations

import csv
import sys

import pytest
import torch

import tracelet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def points(store, run_id, name):
    return [(step, value) for _, value, step, _ in store.metrics(run_id, name)]


def mlflow_history(url, run_id, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{run_id}'",
    )
    history = client.get_metric_history(run.info.run_id, name)
    return run, sorted((m.step, m.value) for m in history)


# -- Lightning -------------------------------------------------------------------------


def lightning_package(name):
    if name == "lightning":
        import lightning.pytorch as pl
    else:
        import pytorch_lightning as pl
    return pl


def tiny_module(pl):
    class Regression(pl.LightningModule):
        def __init__(self, lr=0.1, hidden=8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
            )

        def training_step(self, batch, index):
            loss = self.net(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, index):
            self.log("val/loss", self.net(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    return Regression()


def data():
    inputs = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs), batch_size=4)


def trainer(pl, tmp_path, **options):
    return pl.Trainer(
        max_steps=6,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        limit_val_batches=2,
        val_check_interval=3,
        default_root_dir=tmp_path,
        **options,
    )


def csv_metrics(logger):
    with open(f"{logger.log_dir}/metrics.csv") as file:
        rows = list(csv.DictReader(file))
    found = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "epoch") and value:
                found.setdefault(key, []).append((int(row["step"]), float(value)))
    return found


@pytest.mark.parametrize("package", ["lightning", "pytorch_lightning"])
def test_tracelet_logger_receives_what_lightning_s_own_logger_does(package, tmp_path, read_store):
    from tracelet.integrations import TraceletLogger

    pl = lightning_package(package)
    csv_logger = pl.loggers.CSVLogger(tmp_path / "csv")
    ours = TraceletLogger(project="lightning", run_name="regression")
    trainer(pl, tmp_path, logger=[csv_logger, ours]).fit(tiny_module(pl), data(), data())
    run = ours.experiment
    assert run.status == tracelet.RunStatus.FINISHED  # it started the run: it ends it
    store = read_store()
    expected = csv_metrics(csv_logger)
    assert set(expected) == {"train/loss", "val/loss"}
    for name, values in expected.items():
        assert points(store, run.id, name) == [(s, pytest.approx(v)) for s, v in values]
    assert store.params(run.id) == {"lr": 0.1, "hidden": 8}
    assert (ours.name, ours.version) == ("regression", run.id)


def test_the_spec_s_lightning_callback_example(tmp_path, read_store, mlflow_server):
    """../shared/spec/tracer-api.md, "PyTorch Lightning", with a real module and data, and
    Lightning's default logger (TensorBoard): every value arrives once."""
    import pytorch_lightning as pl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tracelet.integrations import LightningCallback
    from tracelet_torch import optim_hooks

    hooks = optim_hooks.listeners()
    model = tiny_module(pl)
    config = {"backend": ["local", "mlflow"], "tracking_uri": mlflow_server.url}
    config["enable_automagic"] = True  # optimizer hyperparameters too
    callback = LightningCallback(project="my-project", checkpoint_interval=2, config=config)
    trainer = pl.Trainer(
        callbacks=[callback],
        max_steps=6,
        log_every_n_steps=1,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data())
    run = callback.experiment
    assert run.status == tracelet.RunStatus.FINISHED
    store = read_store()
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in losses] == [0, 1, 2, 3, 4, 5]
    assert points(store, run.id, "train/loss") == [(s, pytest.approx(v)) for s, v in losses]
    _, history = mlflow_history(mlflow_server.url, run.id, "train/loss")
    assert history == points(store, run.id, "train/loss")
    checkpoints = store.checkpoints(run.id)
    assert [c["step"] for c in checkpoints] == [1, 3, 5]  # every 2 steps, with their values
    assert [c["metrics"]["train/loss"] for c in checkpoints] == pytest.approx(
        [v for s, v in losses if s in (1, 3, 5)]
    )
    params = store.params(run.id)
    assert params["lr"] == 0.1
    assert params["model/class"].endswith("Regression")
    assert params["optimizer/class"] == "SGD"
    assert [s for s, _ in points(store, run.id, "grad/total_norm")] == [1, 3, 5]
    assert points(store, run.id, "param/net.0.weight/update_ratio")
    assert optim_hooks.listeners() == hooks  # unwatched at the end
    assert trainer.checkpoint_callback.dirpath.startswith(trainer.logger.log_dir)


def test_a_second_stage_continues_the_callback_s_run(tmp_path, read_store):
    import lightning.pytorch as pl

    from tracelet.integrations import LightningCallback

    model = tiny_module(pl)
    callback = LightningCallback(project="stages")
    trainer = pl.Trainer(
        callbacks=[callback], logger=pl.loggers.CSVLogger(tmp_path), **QUIET_TRAINER
    )
    trainer.fit(model, data(), data())
    first = callback.experiment.id
    trainer.validate(model, data())
    assert callback.experiment.id == first
    assert callback.experiment.status == tracelet.RunStatus.FINISHED
    (run,) = read_store().list_runs()
    assert [s for s, _ in points(read_store(), run.id, "val/loss")][-1] == 6
    assert sum(1 for k in read_store().params(run.id) if k == "lr") == 1


def test_a_model_built_in_configure_model_is_watched(tmp_path, read_store):
    import lightning.pytorch as pl

    from tracelet.integrations import LightningCallback

    class Late(pl.LightningModule):
        def configure_model(self):
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = LightningCallback(project="late", checkpoint_interval=2)
    trainer = pl.Trainer(
        callbacks=[callback], logger=pl.loggers.CSVLogger(tmp_path), **QUIET_TRAINER
    )
    trainer.fit(Late(), data())
    run = callback.experiment
    assert [s for s, _ in points(read_store(), run.id, "grad/net.weight/norm")] == [1, 3, 5]


QUIET_TRAINER = {
    "max_steps": 6,
    "log_every_n_steps": 1,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "limit_val_batches": 2,
}


def test_the_callback_does_nothing_off_rank_zero(read_store):
    import lightning.pytorch as pl

    from tracelet.integrations import LightningCallback

    class OtherRank:
        is_global_zero = False
        global_step = 3
        loggers = ()

    callback = LightningCallback(project="ranks")
    module = tiny_module(pl)
    for hook in ("setup", "teardown"):
        getattr(callback, hook)(OtherRank(), module, "fit")
    callback.on_train_batch_start(OtherRank(), module, None, 0)
    assert callback.experiment is None
    assert read_store().list_runs() == []


def test_lightning_logs_only_on_rank_zero(tmp_path, read_store, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    from tracelet.integrations import TraceletLogger

    logger = TraceletLogger(project="ranks")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, 0)
    logger.finalize("success")
    assert tracelet.get_active_experiment() is None
    assert read_store().list_runs() == []


def test_a_logger_continues_its_run_after_fit(tmp_path, read_store):
    """``trainer.test`` after ``fit``: the logger that ended its run takes it up again."""
    from tracelet.integrations import TraceletLogger

    logger = TraceletLogger(project="again")
    logger.log_metrics({"loss": 1.0}, 0)
    logger.finalize("success")
    first = logger.version
    logger.log_metrics({"test/loss": 0.5}, 7)
    logger.finalize("failed")
    assert logger.version == first
    (run,) = read_store().list_runs()
    assert run.status == tracelet.RunStatus.FAILED
    assert points(read_store(), run.id, "test/loss") == [(7, 0.5)]


def test_a_logger_uses_the_run_already_active(read_store):
    from tracelet.integrations import TraceletLogger

    with tracelet.start_logging("mine") as exp:
        logger = TraceletLogger()
        logger.log_metrics({"loss": 2.0}, 3)
        logger.finalize("success")
        assert exp.is_running  # not the logger's to end
    assert points(read_store(), exp.id, "loss") == [(3, 2.0)]


# -- Transformers ----------------------------------------------------------------------


class Sentences(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        tokens = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": tokens, "labels": torch.tensor(index % 2)}


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def test_the_spec_s_transformers_callback_example(tmp_path, read_store, mlflow_server):
    """../shared/spec/tracer-api.md, "HuggingFace Transformers", on a tiny BERT built from
    a config (nothing downloaded)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from tracelet.integrations import TransformersCallback

    model = tiny_bert()
    training_args = TrainingArguments(
        tmp_path / "out",
        max_steps=6,
        per_device_train_batch_size=4,
        logging_steps=2,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        hub_token="hf_secret_token_value",
    )
    logged = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append((state.global_step, dict(logs)))

    config = {"backend": ["local", "mlflow"], "tracking_uri": mlflow_server.url}
    callback = TransformersCallback(project="my-project", checkpoint_interval=2, config=config)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=Sentences(),
        callbacks=[callback, Recorder()],
    )
    trainer.train()
    run = callback.experiment
    assert run.status == tracelet.RunStatus.FINISHED
    store = read_store()
    losses = [(step, logs["loss"]) for step, logs in logged if "loss" in logs]
    assert [s for s, _ in losses] == [2, 4, 6]
    assert points(store, run.id, "loss") == [(s, pytest.approx(v)) for s, v in losses]
    _, history = mlflow_history(mlflow_server.url, run.id, "loss")
    assert history == points(store, run.id, "loss")
    params = store.params(run.id)
    assert params["learning_rate"] == 1e-3
    assert params["max_steps"] == 6
    assert params["model_config/hidden_size"] == 16
    assert params["model_config/id2label/0"] == "LABEL_0"
    assert params["model/class"] == "BertForSequenceClassification"
    assert "hf_secret_token_value" not in repr(params)
    checkpoints = store.checkpoints(run.id)  # every 2 of the Trainer's steps, with their loss
    assert [c["step"] for c in checkpoints] == [2, 4, 6]
    assert [c["metrics"]["loss"] for c in checkpoints] == pytest.approx([v for _, v in losses])
    grad_norms = {s: logs["grad_norm"] for s, logs in logged if "grad_norm" in logs}
    watched = dict(points(store, run.id, "grad/total_norm"))  # numbered as the Trainer does
    assert sorted(watched) == [2, 4, 6]
    clip = training_args.max_grad_norm  # watch sees what the optimizer applies: clipped
    assert watched[2] == pytest.approx(min(grad_norms[2], clip), rel=1e-4)
    metrics = trainer.evaluate(Sentences())  # after train: the same run, continued, ended
    assert callback.experiment.id == run.id
    assert callback.experiment.status == tracelet.RunStatus.FINISHED
    assert tracelet.get_active_experiment() is None
    assert points(read_store(), run.id, "eval_loss") == [(6, pytest.approx(metrics["eval_loss"]))]


def test_integrations_are_imported_lazily_and_name_what_is_missing(monkeypatch):
    import tracelet.integrations as integrations

    assert sorted(integrations.__all__) == [
        "LightningCallback",
        "TraceletLogger",
        "TransformersCallback",
    ]
    monkeypatch.delitem(integrations.__dict__, "TransformersCallback", raising=False)
    monkeypatch.setitem(sys.modules, "tracelet_torch", None)
    with pytest.raises(ImportError, match="pip install tracelet-torch"):
        integrations.TransformersCallback  # noqa: B018
    monkeypatch.undo()
    monkeypatch.delitem(integrations.__dict__, "TransformersCallback", raising=False)
    monkeypatch.setitem(sys.modules, "tracelet_torch.huggingface", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"needs transformers.*pip install transformers"):
        integrations.TransformersCallback  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'KerasCallback'"):
        integrations.KerasCallback  # noqa: B018


def test_import_tracelet_imports_no_framework(tmp_path):
    from python_script import run_script

    done = run_script(
        """
        import sys, tracelet, tracelet.integrations
        heavy = ("torch", "lightning", "pytorch_lightning", "transformers", "tracelet_torch")
        print([m for m in heavy if m in sys.modules])
        """,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == "[]", done.stderr
