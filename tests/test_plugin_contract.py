"""The plugin-author API (``tracelet.plugins``) and pluggy used as designed."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys

import pytest

import tracelet
import tracelet.plugins
from tracelet.core.registry import PluginRegistry, default_registry
from tracelet.plugins import (
    BackendPlugin,
    BackendRegistration,
    CollectorPlugin,
    CollectorRegistration,
    ConfigurationError,
    FrameworkRegistration,
    Option,
    hookimpl,
)


@pytest.mark.parametrize("name", tracelet.plugins.__all__)
def test_every_name_a_plugin_author_imports_is_documented(name):
    from pathlib import Path

    value = getattr(tracelet.plugins, name)
    if name in ("MetricPoint", "ParamValue"):  # type aliases carry no docstring of their own
        docs = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
        assert f"`{name}`" in docs
        return
    doc = inspect.getdoc(value)
    assert doc, f"tracelet.plugins.{name} has no docstring"
    assert "pluggy" not in type(value).__module__ or "Tracelet" in doc, "our own words"


def test_plugins_import_nothing_internal():
    code = (
        "import sys, tracelet.plugins; "
        "print(sorted(m for m in sys.modules if m.startswith('tracelet.core')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_the_store_is_a_leaf_package():
    code = "import sys, tracelet.storage; print([m for m in sys.modules if 'tracelet.core' in m])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr


@pytest.mark.parametrize("package", ["mlflow", "wandb", "clearml", "aim", "torch"])
def test_backend_plugins_import_only_the_plugin_surface(package):
    """Backends import ``tracelet.plugins``; their ``testing`` module also the kit."""
    import importlib
    from pathlib import Path

    module = importlib.import_module(f"tracelet_{package}")
    for path in Path(module.__file__).parent.glob("*.py"):
        allowed = ("from tracelet.plugins import", "from tracelet.testing")
        allowed = allowed if path.name == "testing.py" else allowed[:1]
        for line in path.read_text().splitlines():
            if line.startswith(("from tracelet.", "import tracelet.")):
                assert line.startswith(allowed), f"{path.name}: {line}"


# -- options -------------------------------------------------------------------------


class Probe(BackendPlugin):
    """Keeps what it receives."""

    def start_run(self, run, resumed):
        self.run = run

    def log_batch(self, batch):
        pass

    def finish_run(self, status):
        pass


PROBE = BackendRegistration(
    "probe",
    Probe,
    options=[
        Option("url", str, doc="where"),
        Option("retries", int, 3, doc="how many"),
        Option("ratio", float, 0.5, doc="a fraction"),
        Option("verbose", bool, False, doc="talk"),
    ],
    description="a probe",
    version="9.9",
)


def test_options_are_checked_and_defaulted_before_initialize():
    probe = PROBE.build({"url": "http://x", "ratio": 1})
    assert probe.config == {"url": "http://x", "retries": 3, "ratio": 1.0, "verbose": False}
    assert probe.name == "probe", "the name comes from the registration"
    assert probe.get_metadata().version == "9.9"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"urll": "x"}, r"unknown option 'urll' for backend 'probe'; did you mean 'url'\?"),
        ({"retries": "3"}, r"probe option 'retries' expects int, got str '3'"),
        ({"retries": True}, r"probe option 'retries' expects int, got bool True"),
        ({"verbose": 1}, r"probe option 'verbose' expects bool, got int 1"),
        ({"ratio": float("nan")}, r"probe option 'ratio' must be finite"),
    ],
)
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigurationError, match=message):
        PROBE.build(options)


def test_option_values_parse_from_the_command_line():
    retries, ratio, verbose, url = (
        PROBE.options[1],
        PROBE.options[2],
        PROBE.options[3],
        PROBE.options[0],
    )
    assert retries.parse("probe", "5") == 5
    assert ratio.parse("probe", "0.25") == 0.25
    assert verbose.parse("probe", "yes") is True
    assert url.parse("probe", "http://y") == "http://y"
    with pytest.raises(ConfigurationError, match="expects int"):
        retries.parse("probe", "many")


def test_a_secret_option_is_never_shown_in_errors():
    secret = Option("api_key", str, secret=True)
    with pytest.raises(ConfigurationError) as caught:
        secret.check("probe", 12345)
    assert "12345" not in str(caught.value)


def test_registrations_refuse_untyped_options_and_bad_names():
    with pytest.raises(TypeError, match=r"tracelet.plugins.Option\(name, type\)"):
        BackendRegistration("x", Probe, options={"url"})
    with pytest.raises(ValueError, match="lower-case"):
        BackendRegistration("My Backend", Probe)
    with pytest.raises(ValueError, match="declared twice"):
        BackendRegistration("x", Probe, options=[Option("a"), Option("a")])


def test_the_base_class_owns_started_and_stopped():
    class Connects(Probe):
        def start(self):
            self.connection = "open"

        def stop(self):
            self.connection = None

    plugin = BackendRegistration("connects", Connects).build({})
    assert not plugin.started
    plugin.start()
    assert plugin.started
    plugin.stop()
    assert not plugin.started
    probe = PROBE.build({})
    probe.start()
    assert probe.started, "a plugin without start() of its own is tracked too"


def test_a_factory_that_returns_the_wrong_kind_is_named():
    registration = BackendRegistration("odd", lambda: object())
    with pytest.raises(TypeError, match="factory of backend 'odd' returned object"):
        registration.build({})


# -- pluggy as designed ----------------------------------------------------------------


def test_hooks_are_called_through_pluggy():
    registry = PluginRegistry(entry_points_group=None)
    calls = []
    undo = registry.manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append(name), lambda *args: None
    )
    try:
        registry.backends()
        registry.collectors()
        registry.announce("tracelet_run_finished", experiment=None, status="finished")
    finally:
        undo()
    assert calls == [
        "tracelet_register_backends",
        "tracelet_register_collectors",
        "tracelet_run_finished",
    ]


def test_a_misspelled_hook_is_a_clear_error_naming_the_plugin():
    class Typo:
        @hookimpl
        def tracelet_register_backend(self):
            return []

    registry = PluginRegistry(entry_points_group=None)
    with pytest.raises(ConfigurationError) as caught:
        registry.register(Typo(), name="typo")
    message = str(caught.value)
    assert "plugin 'typo'" in message
    assert "'tracelet_register_backend' is not a Tracelet hook" in message
    assert "did you mean 'tracelet_register_backends'?" in message
    assert registry.manager.get_plugin("typo") is None


def test_a_misspelled_hook_in_an_installed_plugin_is_reported_once_and_skipped(
    tmp_path, monkeypatch, caplog
):
    dist = tmp_path / "site" / "typo_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tracelet]\ntypo = typo_plugin\n")
    (tmp_path / "site" / "typo_plugin.py").write_text(
        "import tracelet\n\n@tracelet.hookimpl\ndef tracelet_run_startd(experiment):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with caplog.at_level(logging.WARNING, "tracelet"):
        registry = PluginRegistry()
    assert "did you mean 'tracelet_run_started'?" in registry.failures["typo"]
    assert registry.manager.get_plugin("typo") is None
    assert "local" in registry.backends(), "the others load"


def test_disabled_plugins_are_blocked_in_pluggy():
    registry = PluginRegistry(entry_points_group=None, disabled=["collectors"])
    assert registry.manager.is_blocked("collectors")
    assert registry.collectors() == {}
    with pytest.raises(ConfigurationError, match="disabled"):
        registry.register(sys.modules["tracelet.collectors"], name="collectors")


def test_a_disabled_builtin_is_disabled_through_the_setting(monkeypatch, read_store):
    monkeypatch.setenv("TRACELET_DISABLE_PLUGINS", "artifact_watch")
    exp = tracelet.start_logging("no watcher")
    assert "artifact-watch" not in {f.name for f in exp.frameworks}
    exp.stop()


@pytest.mark.parametrize(
    ("hook", "record", "kind"),
    [
        ("tracelet_register_collectors", CollectorRegistration, "collector"),
        ("tracelet_register_frameworks", FrameworkRegistration, "framework integration"),
    ],
)
def test_duplicate_names_are_refused_for_every_kind(hook, record, kind):
    class One(CollectorPlugin):
        def collect(self):
            return {}

    def plugin(tag):
        holder = type(f"Plugin{tag}", (), {})
        setattr(holder, hook, hookimpl(lambda self: [record("same", One, f"from {tag}")]))
        return holder()

    registry = PluginRegistry(entry_points_group=None)
    registry.register(plugin("a"), name="first")
    registry.register(plugin("b"), name="second")
    lookup = registry.collectors if kind == "collector" else registry.frameworks
    with pytest.raises(ConfigurationError, match=rf"\('first', 'second'\) register a {kind}"):
        lookup()


def test_a_lifecycle_hook_that_raises_does_not_keep_the_others_from_running(caplog):
    seen = []

    class Early:
        @hookimpl
        def tracelet_run_started(self, experiment):
            seen.append("early")

    class Broken:
        @hookimpl
        def tracelet_run_started(self, experiment):
            raise RuntimeError("broken hook")

    class Late:
        @hookimpl
        def tracelet_run_started(self, experiment):
            seen.append("late")

    registry = PluginRegistry(entry_points_group=None)
    for plugin, name in ((Early(), "early"), (Broken(), "broken"), (Late(), "late")):
        registry.register(plugin, name=name)
    with caplog.at_level(logging.WARNING, "tracelet"):
        registry.announce("tracelet_run_started", experiment=None)
    assert sorted(seen) == ["early", "late"], "each other hook ran exactly once"
    assert "broken hook" in registry.failures["broken"]


def test_tracelet_debug_traces_hook_calls(tmp_path):
    code = (
        "import tracelet\n"
        "with tracelet.start_logging('traced', config={'track_system': False}) as exp:\n"
        "    exp.log_metric('loss', 1.0, 0)\n"
    )
    env = {"TRACELET_DEBUG": "1", "PATH": "", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "tracelet_register_backends" in done.stderr
    assert "tracelet_run_started" in done.stderr


def test_default_registry_follows_the_settings():
    assert default_registry(["git"]).disabled == {"git"}
    assert default_registry(debug=True).debug
    assert not default_registry().debug


def python_blocks(path):
    import re

    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_the_jsonl_backend_of_the_plugin_docs_runs_as_written(tmp_path, monkeypatch, capsys):
    import json
    from pathlib import Path

    from tracelet.cli import main as cli

    docs = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
    module, usage, trial = python_blocks(docs)[:3]
    package = tmp_path / "site" / "my_tracker"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import my_tracker.plugin

    registry = default_registry()
    registry.register(my_tracker.plugin, name="jsonl")
    try:
        exec(usage, {})
        exec(trial, {})
        lines = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
        run_id = lines[0]["run"]
        assert lines[0]["params"] == {"lr": 0.1}
        assert [m[:3] for line in lines[:-1] for m in line.get("metrics", [])] == [["loss", 0.5, 0]]
        assert lines[-1] == {"run": run_id, "status": "finished"}
        assert "ended: finished" in capsys.readouterr().out
        assert Path("test.jsonl").exists(), "the registry-only trial ran too"
        with tracelet.start_logging("local only") as local:
            local.log_metric("loss", 0.25, 3)
        assert cli(["sync", local.id, "--to", "jsonl", "--option", "file=archive.jsonl"]) == 0
        archived = [json.loads(line) for line in Path("archive.jsonl").read_text().splitlines()]
        assert archived[0]["metrics"][0][:3] == ["loss", 0.25, 3]
        assert archived[-1] == {"run": local.id, "status": "finished"}
    finally:
        registry.unregister("jsonl")
