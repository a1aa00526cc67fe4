"""Finding the App named by ``-A module[:attr]``."""

from __future__ import annotations

import os
import subprocess

import pytest

from iii_broker import App
from iii_broker.errors import AppNotFound
from iii_broker.worker.loader import load_app
from tests.helpers import ROOT, bin_cmd


def test_module_colon_attr_loads_that_attribute():
    from tests.apps import basic
    assert load_app("tests.apps.basic:app") is basic.app


def test_a_module_alone_finds_its_app_attribute():
    from tests.apps import basic
    app = load_app("tests.apps.basic")
    assert app is basic.app
    assert "test::add" in app.functions


def test_a_module_alone_finds_its_only_app_whatever_its_name():
    from tests.apps import one_app
    assert load_app("tests.apps.one_app") is one_app.shop


def test_a_file_path_is_taken_as_the_module_it_names():
    from tests.apps import basic
    assert load_app(os.path.join("tests", "apps", "basic.py")) is basic.app


def test_a_module_with_several_apps_asks_which_one_naming_them():
    with pytest.raises(AppNotFound) as info:
        load_app("tests.apps.two_apps")
    message = info.value.message
    assert "several apps (billing, shipping)" in message
    assert "-A tests.apps.two_apps:NAME" in message
    assert load_app("tests.apps.two_apps:shipping").name == "shipping"


def test_a_factory_function_is_called_to_make_the_app():
    app = load_app("tests.apps.factory")  # finds create_app()
    assert isinstance(app, App) and app.name == "made"
    assert list(app.functions) == ["made::hello"]


def test_a_named_factory_is_called_to_make_the_app():
    assert load_app("tests.apps.factory:make_other").name == "other"


def test_a_factory_that_returns_something_else_is_an_error():
    with pytest.raises(AppNotFound, match="the factory returned int, not an App"):
        load_app("tests.apps.factory:not_a_factory")


def test_a_callable_that_needs_arguments_is_an_error_not_a_crash():
    with pytest.raises(AppNotFound, match="needs_arguments is not an App instance.*need arguments"):
        load_app("tests.apps.factory:needs_arguments")
    with pytest.raises(AppNotFound, match="App is not an App instance"):
        load_app("iii_broker.app:App")


def test_an_attribute_that_is_not_an_app_is_an_error():
    with pytest.raises(AppNotFound, match="tests.apps.no_app:VALUE: is a int, not an iii_broker.App"):
        load_app("tests.apps.no_app:VALUE")


def test_a_missing_module_is_an_error_naming_it():
    with pytest.raises(AppNotFound) as info:
        load_app("nonexistent.module")
    assert "no module named 'nonexistent'" in info.value.message
    assert info.value.code == "app_not_found"


def test_a_missing_submodule_is_an_error_naming_the_full_module():
    with pytest.raises(AppNotFound, match="no module named 'tests.apps.nonexistent'"):
        load_app("tests.apps.nonexistent")


def test_a_missing_dependency_of_the_module_is_named_as_such():
    with pytest.raises(AppNotFound) as info:
        load_app("tests.apps.missing_dep")
    message = info.value.message
    assert "importing 'tests.apps.missing_dep' failed" in message
    assert "iii_broker_no_such_dependency" in message


def test_a_missing_attribute_is_an_error_naming_it_and_listing_the_apps_found():
    with pytest.raises(AppNotFound) as info:
        load_app("tests.apps.two_apps:billng")
    message = info.value.message
    assert "module 'tests.apps.two_apps' has no attribute 'billng'" in message
    assert "apps in it: billing, shipping" in message


def test_a_module_without_any_app_says_what_to_write():
    with pytest.raises(AppNotFound, match="found no iii_broker.App in module 'tests.apps.no_app'"):
        load_app("tests.apps.no_app")


@pytest.mark.parametrize("spec", ["", ":app"])
def test_a_spec_without_a_module_is_an_error(spec):
    with pytest.raises(AppNotFound, match="give a module"):
        load_app(spec)


def _run_worker(settings, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(settings.child_env())
    return subprocess.run(bin_cmd("iii-worker", *args), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_the_worker_exits_2_with_a_usage_error_for_a_module_that_does_not_exist(settings):
    done = _run_worker(settings, "-A", "nonexistent.module")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "iii-worker: -A nonexistent.module: no module named 'nonexistent'" in done.stderr
    assert "Traceback" not in out


def test_the_worker_exits_2_naming_the_missing_attribute_and_the_apps_found(settings):
    done = _run_worker(settings, "-A", "tests.apps.two_apps:nope")
    assert done.returncode == 2
    assert "has no attribute 'nope'; apps in it: billing, shipping" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_worker_exits_2_for_an_app_without_functions(settings):
    done = _run_worker(settings, "-A", "tests.apps.factory:make_other")
    assert done.returncode == 2
    assert "app 'other' defines no functions" in done.stderr


def test_the_worker_without_dash_a_prints_its_usage_and_exits_2(settings):
    done = _run_worker(settings)
    assert done.returncode == 2
    assert "usage: iii-worker" in done.stderr and "-A" in done.stderr
