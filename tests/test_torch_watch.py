"""``tracelet.watch``, optimizer capture and model description (tracelet-torch): tiny
models trained on the CPU, read back from the local store and a real MLflow server."""

from __future__ import annotations

import math

import pytest
import torch

import tracelet
from tracelet_torch.stats import STATS


def points(store, run_id, name):
    return [(step, value) for _, value, step, _ in store.metrics(run_id, name)]


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def train(model, steps, *, scale=lambda step: 1.0, grads=None, weights=None, lr=0.1):
    """A plain loop: zero_grad, forward, backward, step, ``tracelet.step()``. Keeps a copy
    of every gradient and weight (before the step) in ``grads`` / ``weights``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    data = torch.randn(steps, 16, 4, generator=torch.Generator().manual_seed(1))
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(data[step]).pow(2).mean() * scale(step)
        loss.backward()
        if grads is not None:
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        if weights is not None:
            weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
        optimizer.step()
        tracelet.log({"loss": loss})
        tracelet.step()
    return model


def expected_stats(tensor):
    values = tensor.double().flatten()
    return {
        "norm": values.norm().item(),
        "mean": values.mean().item(),
        "std": values.std().item() if values.numel() > 1 else 0.0,  # not NaN: no alarm
        "max_abs": values.abs().max().item(),
        "nan_count": 0.0,
        "inf_count": 0.0,
    }


def test_watch_logs_every_statistic_of_every_layer_at_log_freq(read_store):
    model, grads, weights = tiny_model(), [], []
    with tracelet.start_logging("watched", config={"checkpoint_interval": 3}) as exp:
        watcher = tracelet.watch(model, log_freq=3)
        train(model, 7, grads=grads, weights=weights)
    store = read_store()
    sampled = [2, 5]  # the last step of each interval of 3: the one a checkpoint covers
    for name, _ in model.named_parameters():
        for stat in STATS:
            got = points(store, exp.id, f"grad/{name}/{stat}")
            assert [step for step, _ in got] == sampled, (name, stat)
            want = [expected_stats(grads[s][name])[stat] for s in sampled]
            assert [v for _, v in got] == pytest.approx(want, rel=1e-4, abs=1e-6), (name, stat)
            param = points(store, exp.id, f"param/{name}/{stat}")
            want = [expected_stats(weights[s][name])[stat] for s in sampled]
            assert [v for _, v in param] == pytest.approx(want, rel=1e-4, abs=1e-6)
        ratio = points(store, exp.id, f"param/{name}/update_ratio")
        moved = [
            ((weights[s + 1][name] - weights[s][name]).norm() / weights[s][name].norm()).item()
            for s in sampled
        ]
        assert [s for s, _ in ratio] == sampled
        assert [v for _, v in ratio] == pytest.approx(moved, rel=1e-4)
    total = points(store, exp.id, "grad/total_norm")
    want = [math.sqrt(sum(g.norm().item() ** 2 for g in grads[s].values())) for s in sampled]
    assert [v for _, v in total] == pytest.approx(want, rel=1e-4)
    assert watcher.steps == 7
    checkpoints = store.checkpoints(exp.id)  # each holds the statistics of its own step
    assert [c["step"] for c in checkpoints] == sampled
    kept = [c["gradient_stats"]["grad/total_norm"] for c in checkpoints]
    assert kept == pytest.approx(want, rel=1e-4)


def test_statistics_describe_the_update_after_accumulation_and_unscaling(read_store):
    """Two backward passes per step, a GradScaler: one sample per optimizer step, of the
    accumulated, unscaled gradients (what the optimizer applies)."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    data = torch.randn(3, 2, 8, 4, generator=torch.Generator().manual_seed(2))
    applied = []
    with tracelet.start_logging("accumulated") as exp:
        tracelet.watch(model, log_freq=1, log="gradients")
        for step in range(3):
            optimizer.zero_grad()
            for micro in range(2):
                scaler.scale(model(data[step, micro]).pow(2).mean()).backward()
            scaler.unscale_(optimizer)
            applied.append(model[0].weight.grad.norm().item())
            scaler.step(optimizer)
            scaler.update()
            tracelet.step()
    got = points(read_store(), exp.id, "grad/0.weight/norm")
    assert [s for s, _ in got] == [0, 1, 2]
    assert [v for _, v in got] == pytest.approx(applied, rel=1e-4)


def test_std_is_exact_when_the_mean_dwarfs_the_spread(read_store):
    """A LayerNorm gain: values near 1 that differ by 1e-4."""
    from tracelet_torch.stats import tensor_stats

    values = 1.0 + 1e-4 * torch.randn(4096, generator=torch.Generator().manual_seed(3))
    (row,) = tensor_stats([values]).tolist()
    assert row[2] == pytest.approx(values.double().std().item(), rel=1e-3)


def test_low_precision_tensors_are_measured_in_float32():
    from tracelet_torch.stats import tensor_stats

    half = torch.full((4,), 0.1, dtype=torch.bfloat16)
    rows = tensor_stats([half, torch.arange(4.0, dtype=torch.float64)])
    assert rows.dtype == torch.float32
    assert rows[0, 1].item() == pytest.approx(half.float().mean().item())
    assert rows[1].tolist()[:3] == pytest.approx([14**0.5, 1.5, 1.2909944])


def test_a_lazy_module_is_watched_once_materialized(read_store):
    model = torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with tracelet.start_logging("lazy") as exp:
        exp.capture_model(model)  # parameters not sized yet: counted as they are
        tracelet.watch(model, log_freq=1, log="gradients")
        train(model, 2)  # the first forward materializes LazyLinear(4 -> 8)
    names = read_store().metric_names(exp.id)
    assert "grad/0.weight/norm" in names
    assert read_store().params(exp.id)["model/parameters"] == 9  # Linear(8, 1) only


def test_watch_defaults_to_the_checkpoint_interval_and_gradient_layers_select(read_store):
    model = tiny_model()
    config = {"checkpoint_interval": 2, "gradient_layers": ["2.*"]}
    with tracelet.start_logging("selected", config=config) as exp:
        tracelet.watch(model, log="gradients")
        train(model, 4)
    names = read_store().metric_names(exp.id)
    assert {n for n in names if n.startswith(("grad/", "param/"))} == {
        *(f"grad/2.{kind}/{stat}" for kind in ("weight", "bias") for stat in STATS),
        "grad/total_norm",
    }
    assert [s for s, _ in points(read_store(), exp.id, "grad/2.weight/norm")] == [1, 3]


def optimizer_hooks():
    from tracelet_torch import optim_hooks

    return optim_hooks.listeners()


def test_unwatch_removes_every_hook_and_track_gradients_off_installs_none(read_store):
    model, hooks = tiny_model(), optimizer_hooks()
    with tracelet.start_logging("unwatched") as exp:
        tracelet.watch(model, log_freq=1)
        tracelet.watch(model, log_freq=1)  # again: replaces, never stacks
        assert len([f for f in exp.frameworks if f.name == "watch"]) == 1
        assert optimizer_hooks() == hooks + 2
        train(model, 2)
        tracelet.unwatch(model)
        assert optimizer_hooks() == hooks
        train(model, 2)
    assert len(points(read_store(), exp.id, "grad/0.weight/norm")) == 2
    with tracelet.start_logging("off", config={"track_gradients": False}) as off:
        assert tracelet.watch(model) is None
        assert optimizer_hooks() == hooks
        train(model, 2)
    assert not [n for n in read_store().metric_names(off.id) if n.startswith("grad/")]


def test_the_hooks_go_when_the_run_stops(read_store):
    hooks = optimizer_hooks()
    with tracelet.start_logging("stopped"):
        tracelet.watch(tiny_model(), log_freq=1)
    assert optimizer_hooks() == hooks


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: tracelet.watch(object()), TypeError, "takes a torch.nn.Module, not object"),
        (lambda: tracelet.watch(tiny_model(), log_freq=0), ValueError, "whole number >= 1"),
        (lambda: tracelet.watch(tiny_model(), log_freq=2.5), ValueError, "log_freq is 2.5"),
        (lambda: tracelet.watch(tiny_model(), log="all the things"), ValueError, "'gradients'"),
    ],
)
def test_bad_watch_arguments_name_the_fix(call, error, message):
    with tracelet.start_logging("bad"), pytest.raises(error, match=message):
        call()


def test_a_zero_checkpoint_interval_is_named_when_it_is_the_default():
    message = "the run's checkpoint_interval is 0; give log_freq"
    config = {"checkpoint_interval": 0}
    with tracelet.start_logging("zero", config=config), pytest.raises(ValueError, match=message):
        tracelet.watch(tiny_model())


def test_no_selected_layer_is_a_clear_error():
    config = {"gradient_layers": ["decoder.*"]}
    with tracelet.start_logging("none", config=config), pytest.raises(ValueError, match="no"):
        tracelet.watch(tiny_model())


def test_exploding_and_vanishing_layers_are_found_live(read_store):
    model = tiny_model()
    found = []
    config = {"on_anomaly": found.append}

    def scale(step):
        return 1e7 if step == 40 else (0.0 if step >= 50 else 1.0)

    with tracelet.start_logging("anomalous", config=config) as exp:
        tracelet.watch(model, log_freq=1, log="gradients")
        train(model, 60, scale=scale, lr=0.0)  # weights stay: only the gradients jump
    kinds = {(a["kind"], a["metric"]) for a in read_store().anomalies(exp.id)}
    assert ("gradient_explosion", "grad/total_norm") in kinds
    assert ("gradient_explosion", "grad/2.weight/norm") in kinds  # per layer
    assert ("vanishing_gradient", "grad/0.weight/norm") in kinds
    assert {a["kind"] for a in found} >= {"gradient_explosion", "vanishing_gradient"}


def test_nan_gradients_are_counted(read_store):
    model, grads = tiny_model(), []
    with tracelet.start_logging("nan") as exp:
        tracelet.watch(model, log_freq=1, log="gradients")
        train(model, 2, scale=lambda step: math.nan if step == 1 else 1.0, grads=grads)
    store = read_store()
    nans = float(grads[1]["0.weight"].isnan().sum())  # (ReLU zeroes some)
    assert nans > 0
    assert points(store, exp.id, "grad/0.weight/nan_count") == [(0, 0.0), (1, nans)]
    assert math.isnan(points(store, exp.id, "grad/0.weight/norm")[1][1])


def test_watch_reaches_mlflow(mlflow_server, read_store):
    from mlflow.tracking import MlflowClient

    model = tiny_model()
    config = {"tracking_uri": mlflow_server.url, "enable_automagic": True}
    with tracelet.start_logging("watched", backend=["local", "mlflow"], config=config) as exp:
        tracelet.watch(model, log_freq=2)
        train(model, 4)
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{exp.id}'",
    )
    for name in ("grad/0.weight/norm", "param/2.bias/update_ratio", "optimizer/lr", "loss"):
        history = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)
        )
        assert history == points(read_store(), exp.id, name), name
    assert run.data.params["optimizer/class"] == "SGD"


def test_optimizer_hyperparameters_and_their_schedule_are_captured(read_store):
    model = tiny_model()
    optimizer = torch.optim.AdamW(
        [
            {"params": model[0].parameters()},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        lr=0.1,
        weight_decay=0.05,
    )
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    with tracelet.start_logging("optimizer", config={"enable_automagic": True}) as exp:
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.ones(2, 4)).sum().backward()
            optimizer.step()
            schedule.step()
            tracelet.step()
    store = read_store()
    params = store.params(exp.id)
    assert params["optimizer/class"] == "AdamW"
    assert (params["optimizer/lr"], params["optimizer/group1/lr"]) == (0.1, 0.01)
    assert params["optimizer/betas"] == "(0.9, 0.999)"
    assert params["optimizer/weight_decay"] == 0.05
    assert points(store, exp.id, "optimizer/lr") == [(0, 0.1), (2, 0.05), (4, 0.025)]
    assert points(store, exp.id, "optimizer/group1/lr") == [(0, 0.01), (2, 0.005), (4, 0.0025)]
    assert points(store, exp.id, "optimizer/weight_decay") == [(0, 0.05)]  # unchanged


def test_optimizer_capture_is_automagic_off_by_default(read_store):
    model = tiny_model()
    with tracelet.start_logging("plain") as exp:
        train(model, 2)
    assert not [n for n in read_store().params(exp.id) if n.startswith("optimizer")]
    assert not [n for n in read_store().metric_names(exp.id) if n.startswith("optimizer")]


def test_capture_model_describes_a_module(read_store):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
    with tracelet.start_logging("model") as exp:
        found = exp.capture_model(model)
    assert found["parameters"] == 4 * 8 + 8 + 8 + 8
    assert found["size_bytes"] == found["parameters"] * 4 + 2 * 8 * 4 + 8  # + BN's buffers
    assert (found["layers"], found["layer_types"]) == (3, "Linear x1, BatchNorm1d x1, ReLU x1")
    store = read_store()
    assert store.params(exp.id)["model/layer_types"] == found["layer_types"]
    (summary,) = store.texts(exp.id)
    assert summary.name == "model/summary"
    assert "BatchNorm1d(8" in summary.text


def test_torch_integrations_cost_nothing_until_torch_is_imported(tmp_path):
    from python_script import run_script

    done = run_script(
        """
        import sys, tracelet
        with tracelet.start_logging("no torch") as exp:
            exp.log_metric("loss", 1.0)
            print(sorted(f.name for f in exp.frameworks))
        print("torch" in sys.modules, "tracelet_torch.tensors" in sys.modules)
        """,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    attached, imported = done.stdout.strip().splitlines()
    assert {"tensorboard", "torch", "torch-tensors"} <= set(eval(attached))
    assert imported == "False True"


def test_two_models_and_their_optimizers_keep_apart(read_store):
    """A GAN's generator and discriminator: each its own names and total norm."""
    generator, critic = tiny_model(), tiny_model()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (generator, critic)]
    with tracelet.start_logging("gan") as exp:
        tracelet.watch(generator, log_freq=1, log="gradients")
        tracelet.watch(critic, log_freq=1, log="gradients", prefix="critic")
        for _ in range(3):
            for model, optimizer in zip((generator, critic), optimizers, strict=True):
                optimizer.zero_grad()
                model(torch.randn(4, 4)).sum().backward()
                optimizer.step()
            tracelet.step()
    store = read_store()
    assert [s for s, _ in points(store, exp.id, "grad/0.weight/norm")] == [0, 1, 2]
    assert [s for s, _ in points(store, exp.id, "grad/critic.0.weight/norm")] == [0, 1, 2]
    assert [s for s, _ in points(store, exp.id, "grad/critic.total_norm")] == [0, 1, 2]
    assert [s for s, _ in points(store, exp.id, "grad/total_norm")] == [0, 1, 2]


def test_a_third_model_gets_a_prefix_of_its_own(read_store):
    with tracelet.start_logging("three") as exp:
        prefixes = [tracelet.watch(tiny_model()).prefix for _ in range(3)]
    assert prefixes == ["", "model2.", "model3."]
    assert exp.status is tracelet.RunStatus.FINISHED


def test_stopping_the_run_inside_an_optimizer_step_raises_nothing(read_store):
    """Hooks are never removed from torch's hook dict while it iterates over them."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    models = [tiny_model(), tiny_model()]
    with tracelet.start_logging("stopped inside") as exp:
        for model in models:
            tracelet.watch(model, log_freq=1)

    def stop_at_step_two(optimizer, args, kwargs):
        if exp.iteration == 2:
            exp.stop()

    handle = register_optimizer_step_pre_hook(stop_at_step_two)
    try:
        exp = tracelet.start_logging("stopped inside")
        for model in models:
            tracelet.watch(model, log_freq=1)
        train(models[0], 2)
        optimizer = torch.optim.SGD(models[1].parameters(), lr=0.1)
        models[1](torch.ones(2, 4)).sum().backward()
        optimizer.step()  # the run stops inside this step
    finally:
        handle.remove()
    assert exp.status is tracelet.RunStatus.FINISHED


def test_a_fused_optimizer_under_a_grad_scaler_is_measured_unscaled(read_store):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    applied = []
    with tracelet.start_logging("fused") as exp:
        tracelet.watch(model, log_freq=1, log="gradients")
        for _ in range(2):
            optimizer.zero_grad()
            scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
            applied.append(model[0].weight.grad.norm().item() / scaler.get_scale())
            scaler.step(optimizer)  # fused: the optimizer unscales, not the scaler
            scaler.update()
            tracelet.step()
    got = [v for _, v in points(read_store(), exp.id, "grad/0.weight/norm")]
    assert got == pytest.approx(applied, rel=1e-4)


def test_a_step_with_a_closure_and_no_gradients_yet_logs_no_zero_norm(read_store):
    model = tiny_model()
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)

    def closure():
        optimizer.zero_grad()
        loss = model(torch.ones(4, 4)).pow(2).mean()
        loss.backward()
        return loss

    with tracelet.start_logging("closure") as exp:
        tracelet.watch(model, log_freq=1, log="gradients")
        optimizer.step(closure)  # no gradient exists before the closure runs
        tracelet.step()
        optimizer.step(closure)
    norms = points(read_store(), exp.id, "grad/total_norm")
    assert [s for s, _ in norms] == [1]
    assert norms[0][1] > 0
