"""``controlplane.config``: defaults, the TOML file, environment overrides, flags, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import ConfigError, env_names, load_config, parse_listen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bourse.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./bourse.toml
    config = load_config(None, env={})
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.gateway.listen == "127.0.0.1:7001"
    assert config.demo.enabled
    assert config.node_config() == {"data_dir": "data/bourse"}


def test_the_repos_bourse_toml_is_valid() -> None:
    config = load_config(Path(__file__).parents[1] / "bourse.toml", env={})
    assert config.http.port == 8080
    assert config.node_config()["durability"] == "fsync"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\ndata_dir = "d1"\n[http]\nport = 9000\nhost = "0.0.0.0"\n'
        '[node]\ndurability = "write"\nsegment_bytes = 4096\n[demo]\nenabled = false\n',
    )
    env = {
        "BOURSE_HTTP_PORT": "9001",
        "BOURSE_NODE_CORES": '{"engine": 2}',
        "BOURSE_NODE_WAIT": "busy_spin",
        "BOURSE_DEMO_ENABLED": "true",
        "BOURSE_DATA_DIR": "not config (the shared market data of the tests)",
        "OTHER": "x",
    }
    config = load_config(path, env=env, overrides={"http": {"port": 9002, "host": None}})
    assert (config.http.host, config.http.port) == ("0.0.0.0", 9002)
    assert config.demo.enabled
    assert config.node_config() == {
        "data_dir": "d1",
        "durability": "write",
        "segment_bytes": 4096,
        "wait": "busy_spin",
        "cores": {"engine": 2},
    }
    assert load_config(path, env=env).http.port == 9001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[htp]\nport = 1\n", "unknown field `htp`"),
        ("[http]\nprot = 1\n", "unknown field `prot` - at `$.http`"),
        ('[http]\nport = "80"\n', "Expected `int`, got `str` - at `$.http.port`"),
        ('[node]\ndurability = "sometimes"\n', "Invalid enum value 'sometimes' - at `$.node"),
        ("[demo]\nenabled = 1\n", "Expected `bool`, got `int` - at `$.demo.enabled`"),
        ("[http\n", "invalid TOML"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert message in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BOURSE_HTTP_PORTS": "1"}, "unknown environment variable BOURSE_HTTP_PORTS"),
        ({"BOURSE_HTTP_PORT": "eighty"}, "BOURSE_HTTP_PORT='eighty': Expected `int`"),
        ({"BOURSE_DEMO_ENABLED": "maybe"}, "BOURSE_DEMO_ENABLED='maybe': Expected `bool`"),
        ({"BOURSE_NODE_CORES": '{"engine": "x"}'}, "BOURSE_NODE_CORES"),
    ],
)
def test_env_errors(
    env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert message in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Path("/nonexistent/bourse.toml"), env={})


def test_env_names_cover_every_key() -> None:
    names = env_names()
    assert "BOURSE_SERVER_DATA_DIR" in names
    assert "BOURSE_GATEWAY_LISTEN" in names
    assert "BOURSE_NODE_SNAPSHOT_EVERY_SECS" in names
    assert "BOURSE_DEMO_QUOTE_INTERVAL_MS" in names


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:7001") == ("127.0.0.1", 7001)
    for bad in ("7001", "host:", ":1", "h:99999", "h:x"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
