"""The engine settings file (TOML): modules, their options, and what disabling one does."""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_broker.errors import ConfigError
from iii_broker.modules import BUILTIN_MODULES, all_trigger_types
from iii_broker.modules.config import EngineConfig
from tests.helpers import bin_cmd


def write(tmp_path: Path, text: str, name: str = "iii.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_without_a_file_every_module_runs_with_its_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no iii.toml here
    config = EngineConfig.load(None)
    assert [m.name for m in config.modules] == list(BUILTIN_MODULES)
    assert set(config.trigger_types) == set(all_trigger_types())
    assert config.module("http").config == {"enabled": True, "port": 3111, "host": "127.0.0.1"}
    assert config.module("state").config == {
        "enabled": True, "max_value_bytes": 1024 * 1024, "max_path_depth": 32,
        "max_key_length": 256, "max_scope_length": 256, "changes_maxlen": 100_000}
    assert config.path is None


def test_iii_toml_in_the_working_directory_is_read_when_no_path_is_given(tmp_path, monkeypatch):
    write(tmp_path, "[modules.http]\nport = 8080\n")
    monkeypatch.chdir(tmp_path)
    config = EngineConfig.load(None)
    assert config.module("http").config["port"] == 8080
    assert config.path == "iii.toml"


def test_a_toml_file_sets_module_options_and_keeps_the_other_defaults(tmp_path):
    path = write(tmp_path, """
[modules.http]
port = 9000
host = "0.0.0.0"

[modules.stream]
enabled = true
""", "engine.toml")
    config = EngineConfig.load(path)
    assert config.path == path
    assert config.module("http").config == {"enabled": True, "port": 9000, "host": "0.0.0.0"}
    assert config.module("state").config == {
        "enabled": True, "max_value_bytes": 1024 * 1024, "max_path_depth": 32,
        "max_key_length": 256, "max_scope_length": 256, "changes_maxlen": 100_000}
    assert config.module("cron").config == {"enabled": True, "lock_timeout_s": 10,
                                            "misfire_threshold_ms": 2000}


def test_an_empty_file_means_the_defaults(tmp_path):
    config = EngineConfig.load(write(tmp_path, ""))
    assert [m.name for m in config.modules] == list(BUILTIN_MODULES)


def test_disabling_a_module_removes_it_and_its_trigger_types(tmp_path):
    config = EngineConfig.load(write(tmp_path, "[modules.cron]\nenabled = false\n"
                                               "[modules.stream]\nenabled = false\n"))
    assert config.module("cron") is None and config.module("stream") is None
    assert "cron" not in config.trigger_types
    assert not {"stream", "stream:join", "stream:leave"} & set(config.trigger_types)
    assert {"http", "durable:subscriber", "subscribe", "state", "log"} <= set(config.trigger_types)


def test_a_module_explicitly_enabled_stays(tmp_path):
    config = EngineConfig.load(write(tmp_path, "[modules.cron]\nenabled = true\n"))
    assert "cron" in config.trigger_types


def test_the_engine_module_cannot_be_disabled(tmp_path):
    with pytest.raises(ConfigError, match=r"\[modules.engine\] cannot be disabled"):
        EngineConfig.load(write(tmp_path, "[modules.engine]\nenabled = false\n"))


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=f"{missing} does not exist"):
        EngineConfig.load(missing)


def test_a_file_that_is_not_toml_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, "[modules.http\nport = \n")
    with pytest.raises(ConfigError, match=f"{path} is not valid TOML"):
        EngineConfig.load(path)


def test_an_unknown_section_is_an_error_naming_it_and_the_known_ones(tmp_path):
    path = write(tmp_path, "[module.http]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        EngineConfig.load(path)
    assert path in info.value.message
    assert "unknown section(s) module; known: modules" in info.value.message


def test_an_unknown_module_is_an_error_naming_it_and_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        EngineConfig.load(write(tmp_path, "[modules.crontab]\nenabled = false\n"))
    assert "unknown module(s) crontab" in info.value.message
    for name in BUILTIN_MODULES:
        assert name in info.value.message


def test_an_unknown_key_is_an_error_naming_it_and_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        EngineConfig.load(write(tmp_path, "[modules.http]\nprot = 8080\n"))
    assert "[modules.http] has unknown key(s) prot; allowed: enabled, port, host" in info.value.message


@pytest.mark.parametrize(("toml", "problem"), [
    ('[modules.http]\nport = "8080"\n', "[modules.http]: 'port' must be int, not str"),
    ("[modules.http]\nport = true\n", "'port' must be int, not bool"),
    ("[modules.http]\nport = 99999\n", "'port' is 99999; use a TCP port from 1 to 65535"),
    ("[modules.http]\nport = 0\n", "[modules.http]: 'port' is 0"),
    ('[modules.cron]\nenabled = "no"\n', "[modules.cron]: 'enabled' must be bool, not str"),
    ("modules = 3\n", "'modules' must be a table"),
    ("[modules]\nhttp = 3\n", "[modules.http] must be a table"),
])
def test_a_bad_value_is_an_error_saying_what_is_wrong(tmp_path, toml, problem):
    with pytest.raises(ConfigError) as info:
        EngineConfig.load(write(tmp_path, toml))
    assert problem in info.value.message


def test_an_engine_refuses_at_start_up_a_settings_file_with_an_error(cluster, tmp_path):
    cluster.env["III_CONFIG_PATH"] = write(tmp_path, "[modules.htp]\nport = 1\n")
    engine = cluster.engine(wait=False)
    assert engine.wait(timeout=30) != 0
    out = engine.output()
    assert "unknown module(s) htp" in out
    assert "Traceback" not in out


def test_a_worker_using_a_disabled_modules_trigger_type_is_refused_at_start_up(cluster, tmp_path):
    path = write(tmp_path, "[modules.cron]\nenabled = false\n")
    cluster.env["III_CONFIG_PATH"] = path
    cluster.engine()
    worker = cluster.spawn("worker", bin_cmd("iii-worker", "-A", "tests.apps.cron_job"))
    code = worker.wait(timeout=30)
    out = worker.output()
    assert code != 0, out
    assert "'cron'" in out and "jobs::tick" in out
    assert "is not enabled" in out
    assert f"module 'cron' is disabled in {path}" in out
    assert "Traceback" not in out
    # Nothing of the refused app was recorded; the engine itself is fine and still
    # accepts an app whose triggers are all enabled.
    assert "jobs::tick" not in {
        f["function_id"] for f in cluster.client.trigger("engine::functions::list", {})["functions"]}
    assert cluster.client.trigger("engine::triggers::list", {})["triggers"] == []
    cluster.worker("tests.apps.basic")
    assert cluster.client.trigger("test::add", {"a": 2, "b": 3}) == {"sum": 5}
