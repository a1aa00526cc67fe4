"""Process settings from ``III_*`` environment variables."""

from __future__ import annotations

import pytest

from iii_broker import Settings
from iii_broker.errors import ConfigError
from iii_broker.settings import DEFAULT_REDIS_URL, mask_url


def test_without_any_variable_every_setting_has_its_default():
    s = Settings.from_env({})
    assert s == Settings()
    assert s.broker_url == s.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert s.namespace == "iii"
    assert s.heartbeat_interval_s == 1.0 and s.heartbeat_ttl_s == 3.0
    assert s.default_timeout_ms == 30_000
    assert s.config_path is None
    assert s.log_level == "INFO"
    assert s.explicit == frozenset()


def test_settings_are_read_from_the_process_environment_by_default(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("III_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("III_NAMESPACE", "shop")
    monkeypatch.setenv("III_DEFAULT_TIMEOUT_MS", "1500")
    s = Settings.from_env()
    assert (s.namespace, s.default_timeout_ms) == ("shop", 1500)
    assert s.explicit == {"namespace", "default_timeout_ms"}


def test_every_variable_is_read_and_converted_to_its_type():
    s = Settings.from_env({
        "III_BROKER_URL": "redis://broker:6380/1", "III_REDIS_URL": "redis://store:6381/2",
        "III_NAMESPACE": "prod-eu_1", "III_HEARTBEAT_INTERVAL_S": "0.25",
        "III_DEFAULT_TIMEOUT_MS": "5000", "III_CONFIG_PATH": "/etc/iii.toml",
        "III_LOG_LEVEL": "debug",
    })
    assert s.broker_url == "redis://broker:6380/1" and s.redis_url == "redis://store:6381/2"
    assert s.namespace == "prod-eu_1"
    assert s.heartbeat_interval_s == 0.25 and s.heartbeat_ttl_s == 0.75
    assert s.default_timeout_ms == 5000 and isinstance(s.default_timeout_ms, int)
    assert s.config_path == "/etc/iii.toml"
    assert s.log_level == "debug"


def test_an_empty_variable_means_the_default():
    s = Settings.from_env({"III_NAMESPACE": "", "III_DEFAULT_TIMEOUT_MS": ""})
    assert s.namespace == "iii" and s.default_timeout_ms == 30_000


@pytest.mark.parametrize("broker", ["redis://10.0.0.5:6380/3", "rediss://:pw@cache.example:6380/0"])
def test_the_redis_url_defaults_to_a_redis_broker_url(broker):
    s = Settings.from_env({"III_BROKER_URL": broker})
    assert s.redis_url == broker
    assert s.explicit == {"broker_url", "redis_url"}


def test_an_explicit_redis_url_wins_over_the_broker_url():
    s = Settings.from_env({"III_BROKER_URL": "redis://a:6379/0", "III_REDIS_URL": "redis://b:6379/5"})
    assert (s.broker_url, s.redis_url) == ("redis://a:6379/0", "redis://b:6379/5")


@pytest.mark.parametrize("broker", ["amqp://guest:guest@rabbit:5672//", "amqps://u:p@rabbit//",
                                    "pyamqp://rabbit//"])
def test_an_amqp_broker_leaves_the_redis_url_at_its_default(broker):
    s = Settings.from_env({"III_BROKER_URL": broker})
    assert s.broker_url == broker
    assert s.redis_url == DEFAULT_REDIS_URL
    assert s.explicit == {"broker_url"}


def test_an_unknown_iii_variable_is_an_error_naming_it():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"III_BROKR_URL": "redis://x/0", "III_NAMESPACE": "ok"})
    message = info.value.message
    assert "unknown setting III_BROKR_URL" in message
    assert "III_BROKER_URL" in message  # the known ones are listed
    assert info.value.code == "config_error"


def test_every_unknown_variable_is_named_at_once():
    with pytest.raises(ConfigError, match="III_A_TYPO, III_OTHER_TYPO"):
        Settings.from_env({"III_OTHER_TYPO": "1", "III_A_TYPO": "2"})


def test_the_test_suites_variables_and_other_programs_variables_are_not_errors():
    s = Settings.from_env({"III_TEST_REDIS_URL": "redis://x", "PATH": "/bin", "IIIX": "1",
                           "iii_namespace": "x"})
    assert s == Settings()


def test_a_misspelt_cors_variable_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="III_CORS_ORIGINS"):
        Settings.from_env({"III_CORS_ORIGINS": "*"})


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("III_HEARTBEAT_INTERVAL_S", "fast", "'fast' is not a valid float"),
    ("III_HEARTBEAT_INTERVAL_S", "0", "positive"),
    ("III_HEARTBEAT_INTERVAL_S", "-1", "positive"),
    ("III_HEARTBEAT_INTERVAL_S", "nan", "positive"),
    ("III_HEARTBEAT_INTERVAL_S", "inf", "positive"),
    ("III_DEFAULT_TIMEOUT_MS", "1.5", "'1.5' is not a valid int"),
    ("III_DEFAULT_TIMEOUT_MS", "30s", "'30s' is not a valid int"),
    ("III_DEFAULT_TIMEOUT_MS", "0", "positive"),
    ("III_DEFAULT_TIMEOUT_MS", "-100", "positive"),
])
def test_a_bad_number_is_an_error_naming_the_variable(var, value, problem):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    assert var in info.value.message and problem in info.value.message


@pytest.mark.parametrize(("env", "var"), [
    ({"III_BROKER_URL": "http://broker:80"}, "III_BROKER_URL"),
    ({"III_BROKER_URL": "127.0.0.1:6379"}, "III_BROKER_URL"),
    ({"III_BROKER_URL": "sqs://queue"}, "III_BROKER_URL"),
    ({"III_BROKER_URL": "amqp://rabbit//", "III_REDIS_URL": "amqp://rabbit//"}, "III_REDIS_URL"),
    ({"III_REDIS_URL": "memcached://cache:11211"}, "III_REDIS_URL"),
])
def test_a_url_with_an_unsupported_scheme_is_an_error_naming_the_variable(env, var):
    with pytest.raises(ConfigError, match=f"{var}=.*use a redis://"):
        Settings.from_env(env)


def test_a_bad_url_in_an_error_never_shows_its_password():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"III_BROKER_URL": "http://user:hunter2@broker/"})
    assert "hunter2" not in str(info.value)
    assert "user:***@broker" in info.value.message


@pytest.mark.parametrize("namespace", ["has space", "a:b", "a.b", "ns/x"])
def test_a_namespace_with_separators_is_an_error(namespace):
    with pytest.raises(ConfigError, match="III_NAMESPACE"):
        Settings.from_env({"III_NAMESPACE": namespace})


def test_a_log_level_that_does_not_exist_is_an_error_not_a_silent_info():
    with pytest.raises(ConfigError, match="III_LOG_LEVEL='LOUD'.*DEBUG, INFO"):
        Settings.from_env({"III_LOG_LEVEL": "LOUD"})
    for level in ("debug", "INFO", "Warning", "ERROR"):
        assert Settings.from_env({"III_LOG_LEVEL": level}).log_level == level


def test_child_env_reproduces_the_same_settings_in_a_child_process():
    s = Settings(broker_url="redis://b:1/0", redis_url="redis://r:2/3", namespace="kid",
                 heartbeat_interval_s=0.3, default_timeout_ms=1234, config_path="/x/iii.toml",
                 log_level="WARNING")
    env = s.child_env()
    assert all(k.startswith("III_") for k in env)
    assert Settings.from_env(env) == s


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://user:secret@host/0", "redis://user:***@host/0"),
    ("rediss://default:s3cr%40t@host:6380/1", "rediss://default:***@host:6380/1"),
    ("amqp://guest:secret@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ("redis://host:6379/0?password=secret&socket_timeout=5",
     "redis://host:6379/0?password=***&socket_timeout=5"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("redis://user@host/0", "redis://user@host/0"),
])
def test_mask_url_hides_the_password_and_keeps_the_rest(url, masked):
    assert mask_url(url) == masked
    assert "secret" not in mask_url(url) and "s3cr" not in mask_url(url)
