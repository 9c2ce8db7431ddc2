"""The plugin kernel: hooks, registration, discovery through entry points, failure isolation."""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import pytest
from fakes import RecordingBackend, recording_backend

import tracelet
from tracelet import hookspecs
from tracelet.core.plugins import BackendRegistration
from tracelet.core.registry import PluginRegistry, default_registry
from tracelet.exceptions import ConfigurationError
from tracelet.storage.backend import LocalBackend

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOKS = [
    (name, fn)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("tracelet_")
]


def test_there_are_hooks_for_backends_collectors_frameworks_and_lifecycle():
    assert {name for name, _ in HOOKS} == {
        "tracelet_register_backends",
        "tracelet_register_collectors",
        "tracelet_register_frameworks",
        "tracelet_run_started",
        "tracelet_run_finished",
    }


@pytest.mark.parametrize(("name", "hook"), HOOKS, ids=[name for name, _ in HOOKS])
def test_every_hook_is_documented(name, hook):
    assert hook.tracelet_spec, "declared with @hookspec"
    doc = inspect.getdoc(hook)
    assert doc, f"{name} has no docstring"
    assert len(doc.splitlines()) >= 3, f"{name}'s docstring should say when and how it is called"
    assert f"### {name}\n" in DOCS.read_text(encoding="utf-8"), f"{name} missing in {DOCS}"


def test_the_local_store_registers_through_the_same_hook():
    registry = PluginRegistry(entry_points_group=None)
    backends = registry.backends()
    assert backends["local"].factory is LocalBackend
    assert registry.manager.get_plugin("local") is sys.modules["tracelet.storage.backend"]


def test_plugin_interfaces_are_abstract_and_metadata_is_a_record():
    with pytest.raises(TypeError, match="abstract"):
        tracelet.BackendPlugin()
    meta = default_registry().build_backend("local", {}).get_metadata()
    assert isinstance(meta, tracelet.PluginMetadata)
    assert (meta.name, meta.type) == ("local", tracelet.PluginType.BACKEND)
    assert meta.version == tracelet.__version__, "name and version come from the registration"
    assert {t.value for t in tracelet.PluginType} == {"backend", "framework", "collector"}
    for interface in (tracelet.CollectorPlugin, tracelet.FrameworkPlugin):
        assert issubclass(interface, tracelet.PluginInterface)


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """An installed distribution whose `tracelet` entry point cannot be imported."""
    dist = tmp_path / "site" / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tracelet]\nbroken = no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "broken"


def test_a_plugin_that_fails_to_import_is_reported_once_and_skipped(broken_distribution, caplog):
    with caplog.at_level(logging.WARNING, "tracelet"):
        registry = PluginRegistry()
        PluginRegistry()
    assert "ModuleNotFoundError" in registry.failures[broken_distribution]
    assert "local" in registry.backends(), "the other plugins still work"
    reports = [r for r in caplog.records if "'broken'" in r.getMessage()]
    assert len(reports) == 1


def test_disabled_plugins_are_not_loaded(broken_distribution, monkeypatch, read_store):
    registry = PluginRegistry(disabled=["broken"])
    assert "broken" not in registry.failures
    monkeypatch.setenv("TRACELET_DISABLE_PLUGINS", "broken")
    exp = tracelet.start_logging("with a plugin disabled")
    assert exp.settings.disable_plugins == ["broken"]
    assert "broken" not in default_registry(["broken"]).failures


def test_a_hook_that_raises_is_isolated(caplog):
    class Faulty:
        @tracelet.hookimpl
        def tracelet_register_backends(self):
            raise RuntimeError("bad plugin")

        @tracelet.hookimpl
        def tracelet_run_started(self, experiment):
            raise RuntimeError("bad start hook")

    registry = default_registry()
    registry.register(Faulty(), name="faulty")
    try:
        with caplog.at_level(logging.WARNING, "tracelet"):
            exp = tracelet.start_logging("isolated")
            exp.log_metric("loss", 1.0, 0)
            exp.stop()
    finally:
        registry.manager.unregister(name="faulty")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "bad plugin" in messages
    assert "bad start hook" in messages
    assert exp.status is tracelet.RunStatus.FINISHED


def test_a_backend_that_cannot_be_built_is_skipped_and_the_run_goes_on(read_store, caplog):
    def broken_factory():
        raise OSError("driver missing")

    class Plugin:
        @tracelet.hookimpl
        def tracelet_register_backends(self):
            return [BackendRegistration("fragile", broken_factory)]

    registry = default_registry()
    registry.register(Plugin(), name="fragile-plugin")
    try:
        with caplog.at_level(logging.WARNING, "tracelet"):
            exp = tracelet.start_logging("goes on", backend=["local", "fragile"])
            exp.log_metric("loss", 1.0, 0)
            exp.stop()
    finally:
        registry.manager.unregister(name="fragile-plugin")
    assert [b.name for b in exp.backends] == ["local"]
    assert "driver missing" in caplog.text
    assert len(read_store().metrics(exp.id)) == 1


def test_bad_backend_options_fail_loudly_at_start():
    with pytest.raises(ConfigurationError, match="unknown option"):
        tracelet.start_logging("bad", config={"local": {"pth": "/tmp/x"}})


def test_two_plugins_claiming_one_backend_name_is_an_error():
    class Impostor:
        @tracelet.hookimpl
        def tracelet_register_backends(self):
            return [BackendRegistration("local", RecordingBackend)]

    registry = PluginRegistry(entry_points_group=None)
    registry.register(Impostor(), name="impostor")
    with pytest.raises(
        ConfigurationError,
        match=r"two plugins \('local', 'impostor'\) register a backend named 'local'",
    ):
        registry.backends()


def test_lifecycle_hooks_announce_start_and_finish():
    seen = []

    class Listener:
        @tracelet.hookimpl
        def tracelet_run_started(self, experiment):
            seen.append(("started", experiment.name, experiment.is_running))

        @tracelet.hookimpl
        def tracelet_run_finished(self, experiment, status):
            seen.append(("finished", experiment.name, status))

    registry = default_registry()
    registry.register(Listener(), name="listener")
    try:
        with tracelet.start_logging("announced"):
            pass
        with pytest.raises(ValueError, match="diverged"), tracelet.start_logging("failing"):
            raise ValueError("diverged")
    finally:
        registry.manager.unregister(name="listener")
    assert seen == [
        ("started", "announced", True),
        ("finished", "announced", tracelet.RunStatus.FINISHED),
        ("started", "failing", True),
        ("finished", "failing", tracelet.RunStatus.FAILED),
    ]


def test_local_backend_can_target_another_store(tmp_path, read_store):
    shared = tmp_path / "shared-store"
    (tmp_path / "weights.bin").write_bytes(b"w")
    with tracelet.start_logging("copied", config={"local": {"path": str(shared)}}) as exp:
        exp.log_metric("loss", 0.5, 0)
        exp.log_params({"lr": 0.1})
        exp.log_artifact("weights.bin")
    journal, target = read_store(), read_store(shared)
    assert target.metrics(exp.id) == journal.metrics(exp.id)
    assert target.params(exp.id) == {"lr": 0.1}
    (artifact,) = target.artifacts(exp.id)
    assert Path(artifact.path).is_relative_to(shared)
    assert Path(artifact.path).read_bytes() == b"w"
    assert target.get_run(exp.id).status is tracelet.RunStatus.FINISHED


def test_recording_backend_fake_is_registered_only_inside_its_block():
    with recording_backend():
        assert "recording" in default_registry().backends()
    assert "recording" not in default_registry().backends()
    assert sys.modules["tracelet"] is tracelet
