"""Configuration: file plus environment, environment winning, errors naming file and key."""

from __future__ import annotations

import pytest

from nbplugins import config, secrets
from nbplugins.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_file_values_are_typed_and_environment_wins(tmp_path, monkeypatch):
    path = write(tmp_path, '[token]\nclient_id = "from-file"\nrefresh_margin = 30\n[retry]\ndeadline = 12\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(path))
    cfg = config.get()
    assert cfg.token.client_id == "from-file" and cfg.token.refresh_margin == 30.0
    assert cfg.retry.deadline == 12.0 and cfg.source == str(path)
    monkeypatch.setenv("NBPLUGINS_OIDC_CLIENT_ID", "from-env")
    monkeypatch.setenv("NBPLUGINS_TOKEN_REFRESH_MARGIN", "5")
    cfg = config.get()
    assert cfg.token.client_id == "from-env" and cfg.token.refresh_margin == 5.0


def test_default_location_is_xdg_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "nbplugins").mkdir()
    (tmp_path / "nbplugins" / "config.toml").write_text('[token]\nsource = "egi"\n')
    assert config.load().token.source == "egi"


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, '[token]\nclient = "x"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert f"{path}.token: unknown key 'client'" in str(info.value)
    with pytest.raises(ConfigError, match="unknown key 'tokens'"):
        config.load(write(tmp_path, '[tokens]\nx = 1\n'))


def test_wrong_type_names_file_and_key(tmp_path):
    path = write(tmp_path, '[token]\nrefresh_margin = "soon"\n')
    with pytest.raises(ConfigError, match=r"config.toml.token.refresh_margin: expected float"):
        config.load(path)


def test_wrong_type_in_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("NBPLUGINS_RETRY_DEADLINE", "forever")
    with pytest.raises(ConfigError, match="environment variable NBPLUGINS_RETRY_DEADLINE: expected float"):
        config.load()


def test_malformed_toml_and_missing_named_file_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[token\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.toml")


def test_secret_settings_are_registered_with_the_scrubber(tmp_path, canary):
    config.load(write(tmp_path, f'[token]\nclient_secret = "{canary}"\n'))
    assert secrets.redact(canary) == "***"


@pytest.mark.parametrize("table,key,expected", [
    ('[token]\nclient_secret = ["{c}"]\n', "token.client_secret", "expected str, got a list"),
    ('[token]\nrefresh_token = {{ value = "{c}" }}\n', "token.refresh_token", "expected str, got a table"),
    ('[token]\nrefresh_margin = "{c}"\n', "token.refresh_margin", "expected float, got a string"),
    ('[s3.lab]\nsecret_access_key = ["{c}", 1]\n', "s3.lab.secret_access_key", "expected str, got a list"),
    ('[s3.lab]\nverify = ["{c}"]\n', "s3.lab.verify", "expected bool, got a list"),
    ('[hubs]\nurls = ["{c}"]\n', "hubs.urls", "expected a table, got a list"),
    ('[hubs.urls]\nlab = ["{c}"]\n', "hubs.urls.lab", "expected str, got a list"),
])
def test_type_errors_name_file_section_key_and_type_never_the_value(tmp_path, canary, table, key, expected):
    path = write(tmp_path, table.format(c=canary))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}.{key}: {expected}"


def test_type_errors_from_the_environment_never_echo_the_value(monkeypatch, canary):
    monkeypatch.setenv("NBPLUGINS_TOKEN_REFRESH_MARGIN", canary)
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value) == "environment variable NBPLUGINS_TOKEN_REFRESH_MARGIN: expected float, got a string"


@pytest.mark.parametrize("text,expected", [
    ("1", True), ("true", True), ("Yes", True), (" ON\n", True),
    ("0", False), ("False", False), ("no", False), ("off", False),
])
def test_parse_bool_reads_one_vocabulary(text, expected):
    assert config.parse_bool(text) is expected


@pytest.mark.parametrize("text", ["", "y", "maybe", "2", "truee"])
def test_parse_bool_refuses_anything_else(text):
    with pytest.raises(ValueError, match="expected true or false"):
        config.parse_bool(text)


def test_boolean_settings_read_the_same_vocabulary():
    assert config.load(environ={"NBPLUGINS_LINK_ALLOW_LOCAL": "on"}).hubs.allow_local_repos is True
    with pytest.raises(ConfigError, match="NBPLUGINS_LINK_ALLOW_LOCAL: expected bool, got a string"):
        config.load(environ={"NBPLUGINS_LINK_ALLOW_LOCAL": "maybe"})


def test_the_readme_lists_every_setting_as_the_code_defines_it():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("<!-- config-reference:start -->\n", 1)[1].split("<!-- config-reference:end -->", 1)[0]
    assert shown == config.reference_markdown(), "README.md is stale: paste `nbplugins config reference` into it"


def test_config_show_masks_secrets(monkeypatch, canary):
    from click.testing import CliRunner

    from nbplugins.cli import cli

    monkeypatch.setenv("OSCAR_PASSWORD", canary)
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 0 and "oscar.password = ***" in result.output and canary not in result.output
