"""The [node] table, ``config show``, settings from flag / env / file / default, one-line errors and
exit codes, and log output (``--log-level``, ``--log-format``), through the real command."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.config import (
    DEFAULT_PORT,
    Invalid,
    Setting,
    check_node_id,
    check_url,
    load_config,
    resolve,
)
from edgeagent.exceptions import ConfigError
from edgeagent.identity import Identity
from edgeagent.logsetup import JsonFormatter, setup_logging
from edgeagent.nodeconfig import NodeConfig

from .procs import ROOT, ProcGroup, free_port, status, wait_for

NODE_A = str(Identity.generate().node_id)
NODE_B = str(Identity.generate().node_id)
#: the environment of every command here: none of the caller's EDGEAGENT_* settings
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_")}


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**CLEAN_ENV, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def one_line(run: subprocess.CompletedProcess[str], code: int) -> str:
    """The run exited ``code`` with exactly one line on stderr (no traceback); that line."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.endswith("\n"), run.stderr
    return run.stderr.strip()


def usage_error(run: subprocess.CompletedProcess[str], command: str) -> str:
    """Exit 2, the message and one short usage line (never the whole help); the message."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 2, run.stderr
    assert lines[0].startswith(f"edgeagent {command}: ")
    assert lines[1].startswith(f"usage: edgeagent {command}") and f"edgeagent {command} --help for more" in lines[1]
    return lines[0]


def toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- values: URLs, NodeIds ------------------------------------------------------------------------


def test_a_url_without_a_port_gets_the_documented_default() -> None:
    assert DEFAULT_PORT == 7400
    assert check_url("ws://host") == "ws://host:7400"
    assert check_url("ws://host:") == "ws://host:7400"
    assert check_url("ws://10.0.0.2/agent") == "ws://10.0.0.2:7400/agent"
    assert check_url("ws://[::1]") == "ws://[::1]:7400"
    assert check_url("wss://example.org") == "wss://example.org:443"
    assert check_url("ws://127.0.0.1:0") == "ws://127.0.0.1:0"  # a listener's "any free port"
    assert check_url("ws://h:80") == "ws://h:80"  # port 80 only when asked for


@pytest.mark.parametrize("bad", ["notaurl", "http://host:7400", "ws://", "ws://h:99999", "ws://h:x", "ws://a b", 7400])
def test_bad_urls_are_refused(bad: object) -> None:
    with pytest.raises(Invalid, match="ws:// or wss:// URL"):
        check_url(bad)


def test_node_ids() -> None:
    assert str(check_node_id(NODE_A)) == NODE_A
    for bad in ("xyz", "", "12D3KooWxx", 5):
        with pytest.raises(Invalid, match=r"not|NodeId \(expected a base58 PeerId like 12D3KooW\.\.\.\)"):
            check_node_id(bad)


# -- the [node] table -------------------------------------------------------------------------------


def test_every_node_key_is_read(tmp_path: Path) -> None:
    cfg = load_config(
        toml(
            tmp_path / "c.toml",
            f"""
[node]
role = "domain"
listen = ["ws://0.0.0.0", "ws://127.0.0.1:7401"]
domain = "ws://dom.example"
expect = "{NODE_A}"
peers = "ws://10.0.0.3:7400"
allow = ["{NODE_A}", "{NODE_B}", "{NODE_A}"]
open = false
state = "st"
data = "~/d.npz"
job = "/etc/job.toml"
cost = "cost.toml"
mdns = "loopback"
mdns_listen_only = true
network = "cellular"
metered = true
insecure = false
relay = true
log_level = "debug"
log_format = "json"
""",
        )
    )
    n = cfg.node
    assert n["role"] == "domain"
    assert n["listen"] == ("ws://0.0.0.0:7400", "ws://127.0.0.1:7401")
    assert n["domain"] == "ws://dom.example:7400"
    assert str(n["expect"]) == NODE_A
    assert n["peers"] == ("ws://10.0.0.3:7400",)
    assert [str(x) for x in n["allow"]] == [NODE_A, NODE_B]
    assert n["state"] == tmp_path / "st"  # relative to the config file
    assert n["data"] == Path("~/d.npz").expanduser()
    assert n["job"] == Path("/etc/job.toml")
    assert n["cost"] == tmp_path / "cost.toml"
    assert (n["mdns"], n["mdns_listen_only"], n["network"], n["metered"], n["relay"]) == (
        "loopback",
        True,
        "cellular",
        True,
        True,
    )
    assert (n["log_level"], n["log_format"], n["open"], n["insecure"]) == ("debug", "json", False, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('role = "server"', 'node.role must be "device" or "domain", got \'server\''),
        ('listen = ["http://x"]', "node.listen must be a list of ws:// or wss:// URLs"),
        ("listen = 7400", "node.listen must be a list of ws:// or wss:// URLs"),
        ('domain = "notaurl"', "node.domain must be a ws:// or wss:// URL (like ws://host:7400), got 'notaurl'"),
        ('expect = "xyz"', "node.expect must be a NodeId (expected a base58 PeerId like 12D3KooW...), got 'xyz'"),
        ('allow = ["xyz"]', "node.allow must be a list of NodeIds"),
        ('open = "yes"', "node.open must be true or false, got 'yes'"),
        ("state = 1", "node.state must be a directory path, got 1"),
        ('mdns = "on"', 'node.mdns must be "off", "loopback" or "auto", got \'on\''),
        ('network = "5g"', "node.network must be "),
        ('metered = "no"', "node.metered must be true or false"),
        ('log_level = "loud"', 'node.log_level must be "debug", "info", "warning" or "error", got \'loud\''),
        ('log_format = "xml"', 'node.log_format must be "text" or "json", got \'xml\''),
        ("speed = 1", "unknown key node.speed (known: role, listen"),
        (f'open = true\nallow = ["{NODE_A}"]', "node.open = true and node.allow exclude each other"),
    ],
)
def test_bad_node_values_name_the_file_the_key_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    p = toml(tmp_path / "c.toml", f"[node]\n{text}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(f"{p}: ") and message in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[link]\nkeepalive = "soon"\n', "link.keepalive must be a positive number of seconds, got 'soon'"),
        ("[link]\nrecv_queue = 1.5\n", "link.recv_queue must be a positive integer, got 1.5"),
        ('[limits]\nlinks_total = "many"\n', "limits.links_total must be a positive integer, got 'many'"),
        ("[limits]\nstream_idle = -1\n", "limits.stream_idle must be a positive number of seconds, got -1"),
        ("[discovery]\npeers = ['http://x']\n", "discovery.peers must be a list of ws:// or wss:// URLs"),
        ("[discovery]\nmdns = 'on'\n", 'discovery.mdns must be "off", "loopback" or "auto", got \'on\''),
        ("[routing]\nprobe_bytes = 10\n", "got 10"),
        ('[routing.peers."http://x"]\nnetwork = "wifi"\n', "routing.peers: 'http://x' is not a ws:// or wss://"),
        ('[node]\nmdns = "auto"\n[discovery]\nmdns = "off"\n', "node.mdns and discovery.mdns are the same setting"),
        ("[node]\nrelay = true\n[routing]\nrelay = false\n", "node.relay and routing.relay are the same setting"),
    ],
)
def test_bad_values_in_other_tables(tmp_path: Path, text: str, message: str) -> None:
    p = toml(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert message in str(exc.value) and str(exc.value).startswith(str(p)), str(exc.value)


def test_routing_peer_urls_get_the_default_port_like_the_peers(tmp_path: Path) -> None:
    cfg = load_config(
        toml(tmp_path / "c.toml", '[discovery]\npeers = ["ws://10.0.0.2"]\n[routing.peers."ws://10.0.0.2"]\n')
    )
    assert cfg.discovery.peers == ("ws://10.0.0.2:7400",)
    assert list(cfg.routing.peers) == ["ws://10.0.0.2:7400"]


def test_the_example_node_table_says_the_defaults() -> None:
    example = ROOT / "configs" / "edgeagent.example.toml"
    from_file = resolve({}, config_file=str(example), env={})
    defaults = resolve({}, env={})
    assert from_file.node["role"].source == "file" and from_file.node["log_format"].source == "file"
    assert {k: s.value for k, s in from_file.node.items()} == {k: s.value for k, s in defaults.node.items()}
    text = example.read_text()
    for key in from_file.node:  # every key is documented there, set or commented out
        assert f"\n{key} = " in text or f"\n# {key} = " in text, key


# -- where each setting comes from ------------------------------------------------------------------


def test_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    p = toml(
        tmp_path / "c.toml",
        f'[node]\nstate = "/from/file"\nlog_level = "error"\nmdns = "loopback"\nallow = ["{NODE_A}"]\n'
        'peers = ["ws://10.0.0.5"]\n[discovery]\npeers = ["ws://10.0.0.6:1"]\n',
    )
    env = {"EDGEAGENT_STATE": "/from/env", "EDGEAGENT_LOG_LEVEL": "INFO", "EDGEAGENT_CONFIG": str(p)}
    res = resolve({}, env=env)
    assert res.config_file == Setting(p, "env", "EDGEAGENT_CONFIG")
    assert res.node["state"] == Setting(Path("/from/env"), "env", "EDGEAGENT_STATE")
    assert res.node["log_level"] == Setting("info", "env", "EDGEAGENT_LOG_LEVEL")
    assert res.node["mdns"] == Setting("loopback", "file", f"{p} [node] mdns")
    assert res.node["role"] == Setting("device", "default")
    assert res.peers == ["ws://10.0.0.5:7400", "ws://10.0.0.6:1"]  # [node] peers, then [discovery] peers
    flags = {
        "state": Setting(Path("/from/flag"), "flag", "--state"),
        "open": Setting(True, "flag", "--open"),
        "peers": Setting(("ws://10.0.0.7:2",), "flag", "--peer"),
    }
    res = resolve(flags, config_file=str(p), env=env)
    assert res.config_file == Setting(p, "flag", "--config")
    assert res["state"] == Path("/from/flag") and res.node["state"].source == "flag"
    assert res["open"] is True and res["allow"] == () and res.node["allow"].source == "flag"  # --open replaces allow
    assert res.peers == ["ws://10.0.0.7:2", "ws://10.0.0.6:1"]  # --peer replaces [node] peers; [discovery] adds
    assert resolve({}, env={}).node["state"].source == "default"


def test_discovery_and_routing_keys_still_work(tmp_path: Path) -> None:
    p = toml(tmp_path / "c.toml", '[discovery]\nmdns = "auto"\nmdns_listen_only = true\n[routing]\nrelay = false\n')
    res = resolve({}, config_file=str(p), env={})
    assert res.node["mdns"] == Setting("auto", "file", f"{p} [discovery] mdns")
    assert res["mdns_listen_only"] is True and res["relay"] is False
    assert resolve({"mdns": Setting("off", "flag", "--mdns")}, config_file=str(p), env={})["mdns"] == "off"


def test_bad_environment_and_a_job_on_a_device(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"EDGEAGENT_LOG_LEVEL='loud' is not valid: use debug or info"):
        resolve({}, env={"EDGEAGENT_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="not found"):
        resolve({}, env={"EDGEAGENT_CONFIG": str(tmp_path / "none.toml")})
    p = toml(tmp_path / "c.toml", '[node]\njob = "job.toml"\n')
    with pytest.raises(ConfigError, match=r"\[node\] job: a job runs on a domain"):
        resolve({}, config_file=str(p), env={})
    assert resolve({"role": Setting("domain", "flag", "edgeagent domain")}, config_file=str(p), env={})["job"]


def test_node_config_from_settings(tmp_path: Path) -> None:
    p = toml(
        tmp_path / "c.toml",
        f'[node]\nrole = "domain"\nlisten = "ws://127.0.0.1:0"\nallow = ["{NODE_A}"]\nnetwork = "wifi"\n'
        "metered = true\nrelay = false\n[link]\nkeepalive = 2\n[routing]\nprobe_interval = 0\n",
    )
    nc = NodeConfig.from_settings(resolve({}, config_file=str(p), env={}))
    assert (nc.role, nc.listen, nc.forward, nc.link_probe_interval) == ("domain", ["ws://127.0.0.1:0"], False, 0.0)
    assert nc.allow is not None and {str(x) for x in nc.allow} == {NODE_A}
    assert (nc.link.network_kind, nc.link.metered, nc.link.keepalive) == ("wifi", True, 2.0)
    assert NodeConfig.from_settings(resolve({"open": Setting(True, "flag", "--open")}, env={})).allow is None
    wss = resolve({"listen": Setting(("wss://127.0.0.1:0",), "flag", "--listen")}, env={})
    with pytest.raises(ConfigError, match=r"wss:// listen URL needs \[tls\] cert_file"):
        NodeConfig.from_settings(wss)


# -- log output ---------------------------------------------------------------------------------------


def test_json_log_lines() -> None:
    stream = io.StringIO()
    handler = setup_logging("info", "json", stream)
    try:
        logging.getLogger("edgeagent.test").info("link up: %s", "x", extra={"peer": "12D3KooWabc", "n": 3})
        logging.getLogger("edgeagent.test").debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("edgeagent.test").exception("failed")
        again = setup_logging("warning", "json", stream)  # replaces its own handler, not another's
        assert handler not in logging.getLogger().handlers and again in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(again)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) == {"ts", "level", "logger", "msg", "peer", "n"}
    assert (first["level"], first["logger"], first["msg"], first["peer"], first["n"]) == (
        "info",
        "edgeagent.test",
        "link up: x",
        "12D3KooWabc",
        3,
    )
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]
    record = logging.LogRecord("l", logging.WARNING, "f", 1, "odd %s", (object,), None)
    assert json.loads(JsonFormatter().format(record))["msg"].startswith("odd <class")
    with pytest.raises(ValueError, match="log level 'loud'"):
        setup_logging("loud")


@pytest.mark.parametrize(
    "command", ["keygen", "id", "run", "domain", "ping", "status", "peers", "routes", "send", "netinfo", "demo"]
)
def test_every_command_takes_the_log_options_and_v_after_its_name(command: str) -> None:
    run = cli(command, "--help")
    assert run.returncode == 0
    assert "--log-level" in run.stdout and "--log-format" in run.stdout and "-v" in run.stdout


def test_log_level_and_v_after_the_command(tmp_path: Path) -> None:
    run = cli("config", "show", "--json", "-v", "--state", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["node"]["log_level"] == {"value": "info", "source": "flag", "from": "-v"}
    run = cli("config", "show", "-vv", "--log-level", "error", "--log-format", "json", "--json")
    node = json.loads(run.stdout)["node"]
    assert node["log_level"]["value"] == "error" and node["log_format"]["value"] == "json"
    run = cli("keygen", "-v", "--state", str(tmp_path / "k"), "--log-level", "debug", "--log-format", "json")
    assert run.returncode == 0, run.stderr
    run = cli("-v", "id", "--state", str(tmp_path / "k"), "-v")
    assert run.returncode == 0 and run.stdout.startswith("12D3KooW")
    run = cli("status", "--state", str(tmp_path), env={"EDGEAGENT_LOG_LEVEL": "loud"})
    assert "EDGEAGENT_LOG_LEVEL='loud'" in one_line(run, 2)


# -- config show ----------------------------------------------------------------------------------------


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    p = toml(tmp_path / "c.toml", '[node]\nmdns = "loopback"\nlisten = ["ws://0.0.0.0"]\n[link]\nkeepalive = 5\n')
    run = cli(
        "config", "show", "--config", str(p), "--domain", "ws://dom.example", "--json", env={"EDGEAGENT_STATE": "/s"}
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["config_file"] == {"value": str(p), "source": "flag", "from": "--config"}
    node = doc["node"]
    assert node["mdns"] == {"value": "loopback", "source": "file", "from": f"{p} [node] mdns"}
    assert node["listen"]["value"] == ["ws://0.0.0.0:7400"]
    assert node["domain"] == {"value": "ws://dom.example:7400", "source": "flag", "from": "--domain"}
    assert node["state"] == {"value": "/s", "source": "env", "from": "EDGEAGENT_STATE"}
    assert node["role"] == {"value": "device", "source": "default", "from": None}
    assert doc["link"]["keepalive"]["value"] == 5.0 and doc["link"]["keepalive"]["source"] == "file"
    assert doc["link"]["dead_after"]["source"] == "default"
    assert {"wire", "link", "tls", "discovery", "routing", "payload", "limits"} <= set(doc)
    text = cli("config", "show", "--config", str(p), "--open", "--role", "domain", env={"EDGEAGENT_CONFIG": "/x"})
    assert text.returncode == 0, text.stderr
    assert f"config file: {p} (from --config)" in text.stdout
    lines = {line.split()[0]: line for line in text.stdout.splitlines()[1:]}
    assert lines["node.open"].endswith("flag (--open)") and lines["node.role"].endswith("flag (--role)")
    assert lines["node.mdns"].endswith(f"file ({p} [node] mdns)") and "default" in lines["node.relay"]
    run = cli("config", "show", "--json", env={"EDGEAGENT_CONFIG": str(p)})
    assert json.loads(run.stdout)["config_file"]["source"] == "env"


def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    toml(tmp_path / "config.toml", '[link]\nkeepalive = "soon"\n')
    for args in (["run", "--config", "config.toml", "--mdns", "off"], ["config", "show", "--config", "config.toml"]):
        line = one_line(cli(*args, cwd=tmp_path), 2)
        assert line.endswith("config.toml: link.keepalive must be a positive number of seconds, got 'soon'"), line
    toml(tmp_path / "n.toml", '[node]\nmdns = "on"\n')
    line = one_line(cli("run", "--state", str(tmp_path / "s"), env={"EDGEAGENT_CONFIG": str(tmp_path / "n.toml")}), 2)
    assert "n.toml: node.mdns must be" in line and "'on'" in line
    assert "not found" in one_line(cli("status", "--config", str(tmp_path / "none.toml")), 2)
    toml(tmp_path / "j.toml", '[node]\nrole = "domain"\njob = "nojob.toml"\n')
    line = one_line(cli("run", "--config", str(tmp_path / "j.toml"), "--state", str(tmp_path / "s")), 2)
    assert "job file" in line and "nojob.toml" in line


# -- errors and exit codes ---------------------------------------------------------------------------


def test_state_naming_a_file_and_an_unwritable_default(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    line = one_line(cli("keygen", "--state", str(afile)), 1)
    assert "is not a directory" in line and "--state DIR" in line
    line = one_line(cli("run", "--state", str(afile), "--mdns", "off"), 1)
    assert "is not a directory" in line
    env = {"XDG_STATE_HOME": "/proc/edgeagent-no-such-dir"}  # cannot be made, not even by root
    line = one_line(cli("keygen", env=env), 1)
    assert "/proc/edgeagent-no-such-dir/edgeagent (the default)" in line and "EDGEAGENT_STATE=DIR" in line
    line = one_line(cli("keygen", env={"EDGEAGENT_STATE": str(afile)}), 1)
    assert "(from EDGEAGENT_STATE) is not a directory" in line


def test_domain_not_a_url_is_refused_at_start(tmp_path: Path) -> None:
    run = cli("run", "--domain", "notaurl", "--state", str(tmp_path), "--mdns", "off")
    assert (
        usage_error(run, "run")
        == "edgeagent run: --domain: 'notaurl' is not a ws:// or wss:// URL (like ws://host:7400)"
    )
    run = cli("run", "--peer", "http://x:1", "--state", str(tmp_path))
    assert "--peer: 'http://x:1' is not a ws:// or wss:// URL" in usage_error(run, "run")
    run = cli("domain", "--listen", "ws://h:99999", "--state", str(tmp_path))
    assert "--listen: 'ws://h:99999' is not a ws:// or wss:// URL with a port from 0 to 65535" in usage_error(
        run, "domain"
    )
    toml(tmp_path / "c.toml", '[node]\ndomain = "notaurl"\n')
    assert "node.domain must be a ws:// or wss:// URL" in one_line(cli("run", "--config", str(tmp_path / "c.toml")), 2)


def test_bad_node_ids_say_what_a_node_id_looks_like(tmp_path: Path) -> None:
    run = cli("domain", "--listen", "ws://127.0.0.1:0", "--allow", "xyz", "--state", str(tmp_path))
    assert usage_error(run, "domain") == (
        "edgeagent domain: --allow: 'xyz' is not a NodeId (expected a base58 PeerId like 12D3KooW...)"
    )
    run = cli("send", "f", "--to", "xyz", "--state", str(tmp_path))
    assert "--to: 'xyz' is not a NodeId (expected a base58 PeerId like 12D3KooW...) or all" in usage_error(run, "send")
    run = cli("run", "--expect", "12D3KooWnope", "--state", str(tmp_path))
    assert "--expect: '12D3KooWnope' is not a NodeId" in usage_error(run, "run")
    run = cli("domain", "--open", "--allow", NODE_A, "--state", str(tmp_path))
    assert "--open and --allow exclude each other" in usage_error(run, "domain")


@pytest.mark.parametrize(("value", "said"), [("0", "0 is out of range"), ("99", "99 is out of range"), ("x", "'x'")])
def test_send_stripes_out_of_range(tmp_path: Path, value: str, said: str) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    line = usage_error(cli("send", str(f), "--stripes", value, "--state", str(tmp_path)), "send")
    assert line.startswith("edgeagent send: --stripes: ") and said in line and "use 1 to 16" in line
    line = one_line(cli("send", str(f), "--chunk-kib", "0", "--state", str(tmp_path)), 1)
    assert "--chunk-kib 0 is out of range: use 1 to 8192 (KiB)" in line


def test_netinfo_names_the_interfaces_that_exist() -> None:
    line = usage_error(cli("netinfo", "--interface", "nosuch0"), "netinfo")
    assert "--interface: 'nosuch0' does not exist here" in line and "lo" in line.split("interfaces are:")[1]
    assert cli("netinfo", "--interface", "lo", "--json").returncode == 0


def test_usage_errors_are_short() -> None:
    run = cli()
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 2 and "edgeagent --help for more" in run.stderr
    usage_error(cli("config"), "config")
    line = usage_error(cli("run", "--network", "5g"), "run")
    assert "--network: invalid choice: '5g'" in line
    usage_error(cli("ping", "ws://127.0.0.1:1", "--count", "0"), "ping")
    assert "unrecognized arguments: --bogus" in usage_error(cli("status", "--bogus"), "status")
    assert "unrecognized arguments: --bogus" in usage_error(cli("config", "show", "--bogus"), "config show")


def test_nodes_from_config_files_with_flags_over_them_and_send_without_wait(tmp_path: Path) -> None:
    """A domain wholly from its [node] table; a device whose file a flag overrides; send without --wait."""
    port = free_port()
    dom_cfg = toml(
        tmp_path / "domain.toml",
        f'[node]\nrole = "domain"\nlisten = ["ws://127.0.0.1:{port}"]\nopen = true\nstate = "dom"\n'
        'mdns = "off"\nlog_level = "info"\nlog_format = "json"\n',
    )
    dev_cfg = toml(
        tmp_path / "device.toml",
        f'[node]\ndomain = "ws://127.0.0.1:1"\nstate = "dev"\nnetwork = "cellular"\nmdns = "off"\n'
        f'allow = ["{NODE_A}"]\n',
    )
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(200_000))
    with ProcGroup(tmp_path) as g:
        dom = g.spawn("domain", [sys.executable, "-m", "edgeagent.cli", "run", "--config", str(dom_cfg)], env=CLEAN_ENV)
        dom.info = dom.read_json_line(20)
        assert dom.info["event"] == "started" and dom.info["role"] == "domain"
        assert dom.info["listen"] == [f"ws://127.0.0.1:{port}"]
        argv = ["run", "--config", str(dev_cfg), "--domain", f"ws://127.0.0.1:{port}", "--open", "--network", "wifi"]
        dev = g.spawn("device", [sys.executable, "-m", "edgeagent.cli", *argv], env=CLEAN_ENV)
        dev.info = dev.read_json_line(20)
        assert dev.info["role"] == "device"
        dev_state = tmp_path / "dev"
        assert (dev_state / "identity.key").exists()  # [node] state, relative to the config file
        links = wait_for(lambda: status(dev_state)["links"], 20, what="the device's link to its domain")
        assert links[0]["peer"] == dom.node_id and links[0]["network_kind"] == "wifi"  # --network over the file
        st = status(tmp_path / "dom")  # status --json is unchanged
        assert {"node_id", "role", "links", "bytes_sent_total", "bytes_received_total", "payloads"} <= set(st)
        assert st["role"] == "domain"
        run = cli("send", str(payload), env={"EDGEAGENT_CONFIG": str(dom_cfg)})  # its [node] state finds the node
        assert run.returncode == 0, run.stderr
        first = run.stdout.splitlines()[0]
        assert first.startswith("payload ") and "started: 200000 bytes to 1 receiver(s)" in first
        assert "edgeagent status --state" in run.stderr and "--wait" in run.stderr
        assert "did not complete" not in run.stderr + run.stdout
        pid = first.split()[1]
        assert len(pid) == 64
        assert wait_for(
            lambda: any(p["id"] == pid and p["complete"] for p in status(dev_state)["payloads"]), 30, what="the payload"
        )
        text = cli("status", "--state", str(tmp_path / "dom"))
        assert f"payload {pid} (source)" in text.stdout
        dom.stop()
        dev.stop()
    log_lines = [json.loads(line) for line in dom.log.read_text().splitlines() if line.startswith("{")]
    assert log_lines and all({"ts", "level", "logger", "msg"} <= set(rec) for rec in log_lines)
    assert any(rec["level"] == "info" for rec in log_lines)
