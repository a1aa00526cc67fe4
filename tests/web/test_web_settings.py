"""The web process's settings: III_HTTP_HOST, _PORT, _BODY_LIMIT and _TIMEOUT_MS."""

from __future__ import annotations

import os

import pytest

from iii_broker import Settings
from iii_broker.errors import ConfigError


def test_http_settings_default_to_iii_s_port_1_mib_and_30_s():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.http_body_limit, s.http_timeout_ms) == (
        "127.0.0.1", 3111, 1_048_576, 30_000)


def test_http_settings_are_read_from_the_environment_and_survive_child_env():
    s = Settings.from_env({"III_HTTP_HOST": "0.0.0.0", "III_HTTP_PORT": "8080",
                           "III_HTTP_BODY_LIMIT": "2048", "III_HTTP_TIMEOUT_MS": "500"})
    assert (s.http_host, s.http_port, s.http_body_limit, s.http_timeout_ms) == (
        "0.0.0.0", 8080, 2048, 500)
    assert Settings.from_env(s.child_env()) == s


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("III_HTTP_PORT", "0", "TCP port"),
    ("III_HTTP_PORT", "70000", "TCP port"),
    ("III_HTTP_PORT", "web", "not a valid int"),
    ("III_HTTP_BODY_LIMIT", "0", "positive"),
    ("III_HTTP_TIMEOUT_MS", "-5", "positive"),
    ("III_HTTP_TIMOUT_MS", "5", "unknown setting III_HTTP_TIMOUT_MS"),
])
def test_a_bad_or_misspelt_http_setting_is_an_error_naming_it(var, value, problem):
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({var: value})


def test_the_web_address_comes_from_the_settings_file_unless_the_environment_sets_it(tmp_path):
    from iii_broker.web.server import web_settings

    path = tmp_path / "iii.toml"
    path.write_text('[modules.http]\nhost = "0.0.0.0"\nport = 8123\n')
    from_file = web_settings(Settings.from_env({"III_CONFIG_PATH": str(path)}))
    assert (from_file.http_host, from_file.http_port) == ("0.0.0.0", 8123)
    from_env = web_settings(Settings.from_env({"III_CONFIG_PATH": str(path),
                                               "III_HTTP_PORT": "9000"}))
    assert (from_env.http_host, from_env.http_port) == ("0.0.0.0", 9000)


def test_the_web_process_refuses_to_start_when_the_http_module_is_disabled(tmp_path):
    import subprocess

    from tests.helpers import bin_cmd

    path = tmp_path / "iii.toml"
    path.write_text("[modules.http]\nenabled = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env["III_CONFIG_PATH"] = str(path)
    done = subprocess.run(bin_cmd("iii-broker", "web"), env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert "the http module is disabled in" in done.stderr
    assert "Traceback" not in done.stderr


def test_middleware_and_cors_settings_are_read_split_and_survive_child_env():
    s = Settings.from_env({"III_HTTP_MIDDLEWARE": "auth::check, audit::log",
                           "III_HTTP_CORS_ORIGINS": "https://a.example,http://localhost:3000"})
    assert s.http_middleware_ids == ("auth::check", "audit::log")
    assert s.http_cors_origin_list == ("https://a.example", "http://localhost:3000")
    assert Settings.from_env(s.child_env()) == s
    assert Settings.from_env({}).http_middleware_ids == Settings().http_cors_origin_list == ()


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("III_HTTP_MIDDLEWARE", "auth check", "III_HTTP_MIDDLEWARE: function id 'auth check' is malformed"),
    ("III_HTTP_MIDDLEWARE", "engine::workers::list", "reserved"),
    ("III_HTTP_CORS_ORIGINS", "app.example", "not an origin"),
    ("III_HTTP_CORS_ORIGINS", "https://app.example/path", "not an origin"),
])
def test_a_bad_middleware_id_or_cors_origin_is_an_error_naming_the_setting(var, value, problem):
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({var: value})
