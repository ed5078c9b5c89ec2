"""Network cost: probes against fake sysfs/procfs trees and fake nmcli / termux-* executables.

Nothing here sends network traffic: the probes read files and run the fake
commands this test writes; a fixture makes any socket connect or send fail.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeagent.exceptions import ConfigError
from edgeagent.netcost import (
    BatteryState,
    ConfigProbe,
    NamesProbe,
    NetCostConfig,
    NetInfo,
    NetWatcher,
    NetworkManagerProbe,
    Override,
    ProbeEnv,
    ProbeResult,
    RunConditions,
    SubprocessRunner,
    SysfsProbe,
    TermuxProbe,
    default_route,
    detect,
    format_netinfo,
    kind_from_name,
    load_netcost,
    netinfo_report,
    read_battery,
)
from edgeagent.netcost.networkmanager import nm_metered, parse_nmcli_show

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("netcost tests must not touch the network")

    for name in ("connect", "connect_ex", "sendto", "send", "sendall"):
        monkeypatch.setattr(socket.socket, name, refuse)


# ---------------------------------------------------------------- fakes


def make_iface(
    sys_root: Path,
    name: str,
    *,
    arphrd: int = 1,
    devtype: str | None = None,
    wireless: bool = False,
    phy80211: bool = False,
    device: bool = False,
) -> Path:
    d = sys_root / "class" / "net" / name
    d.mkdir(parents=True)
    (d / "type").write_text(f"{arphrd}\n")
    uevent = f"INTERFACE={name}\nIFINDEX=3\n" + (f"DEVTYPE={devtype}\n" if devtype else "")
    (d / "uevent").write_text(uevent)
    if wireless:
        (d / "wireless").mkdir()
    if phy80211:
        (d / "phy80211").mkdir()
    if device:
        (d / "device").mkdir()
    return d


ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def route_line(iface: str, dest: str = "00000000", gw: str = "0101A8C0", flags: str = "0003", metric: int = 0) -> str:
    mask = "00000000" if dest == "00000000" else "00FFFFFF"
    return f"{iface}\t{dest}\t{gw}\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


def write_route(proc_root: Path, *lines: str, ipv6: str | None = None) -> None:
    net = proc_root / "net"
    net.mkdir(parents=True, exist_ok=True)
    (net / "route").write_text(ROUTE_HEADER + "".join(lines))
    if ipv6 is not None:
        (net / "ipv6_route").write_text(ipv6)


def write_exe(bindir: Path, name: str, body: str, shebang: str = "#!/bin/sh") -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text(f"{shebang}\n{body}\n")
    p.chmod(0o755)
    return p


def print_exe(bindir: Path, name: str, text: str, status: int = 0) -> Path:
    """A fake command that records its arguments and prints ``text``."""
    body = f'printf "%s\\n" "$@" > "$0.args"\ncat <<\'__EOF__\'\n{text}\n__EOF__\nexit {status}'
    return write_exe(bindir, name, body)


def nm_block(dev: str, typ: str, metered: str, state: str = "100 (connected)", ip_iface: str | None = None) -> str:
    return (
        f"GENERAL.DEVICE:{dev}\nGENERAL.TYPE:{typ}\nGENERAL.STATE:{state}\n"
        f"GENERAL.IP-IFACE:{dev if ip_iface is None else ip_iface}\nGENERAL.METERED:{metered}\n"
    )


def fake_nmcli(bindir: Path, *blocks: str) -> Path:
    return print_exe(bindir, "nmcli", "\n".join(blocks))


WIFI_OK = {
    "bssid": "02:00:00:00:00:00",
    "frequency_mhz": 5180,
    "ip": "192.168.1.23",
    "link_speed_mbps": 433,
    "rssi": -55,
    "ssid": "<unknown ssid>",
    "supplicant_state": "COMPLETED",
}
WIFI_OFF = {"supplicant_state": "DISCONNECTED", "ssid": "<unknown ssid>", "ip": "10.64.1.2"}
PHONE_DATA = {"data_enabled": "true", "data_state": "connected", "network_type": "lte", "phone_type": "gsm"}
PHONE_NO_DATA = {"data_state": "disconnected", "network_type": "unknown", "phone_type": "gsm"}


def fake_termux(bindir: Path, wifi: object, phone: object) -> None:
    for name, obj in (("termux-wifi-connectioninfo", wifi), ("termux-telephony-deviceinfo", phone)):
        print_exe(bindir, name, obj if isinstance(obj, str) else json.dumps(obj, indent=2))


class DeniedFs:
    """Every file access is refused, as Android does for /proc/net and /sys/class/net."""

    def read_text(self, path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    def is_dir(self, path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    def exists(self, path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path))


@pytest.fixture
def box(tmp_path: Path) -> SimpleNamespace:
    """An empty machine: sysfs, procfs and a PATH with nothing on it."""
    ns = SimpleNamespace(sys=tmp_path / "sys", proc=tmp_path / "proc", bin=tmp_path / "bin")
    ns.sys.mkdir()
    ns.proc.mkdir()
    ns.bin.mkdir()
    ns.env = ProbeEnv(
        sys_root=ns.sys, proc_root=ns.proc, path=str(ns.bin), timeout=1.0, termux_timeout=1.0, android=False
    )
    return ns


def runner(box: SimpleNamespace, timeout: float = 1.0) -> SubprocessRunner:
    return SubprocessRunner(str(box.bin), timeout)


# ---------------------------------------------------------------- default route


def test_default_route_via_wlan0(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"), route_line("wlan0", dest="0001A8C0", gw="00000000", flags="0001"))
    r = default_route(box.proc)
    assert r.interface == "wlan0"
    assert "route" in r.evidence


def test_default_route_lowest_metric_wins(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0", metric=600), route_line("rmnet_data0", gw="00000000", metric=100))
    assert default_route(box.proc).interface == "rmnet_data0"


def test_default_route_skips_routes_that_are_down(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("eth0", flags="0002"), route_line("wlan0", metric=600))
    assert default_route(box.proc).interface == "wlan0"


def test_no_default_route(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("eth0", dest="000200C0", flags="0001"))
    r = default_route(box.proc)
    assert r.interface is None
    assert "no default route" in r.evidence


def test_ipv6_fallback_skips_unreachable_lo(box: SimpleNamespace) -> None:
    zero = "0" * 32
    v6 = (
        f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200       lo\n"
        f"{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003 rmnet_data1\n"
        "fe800000000000000000000000000000 40 " + f"{zero} 00 {zero} 00000100 00000001 00000000 00000001 wlan0\n"
    )
    write_route(box.proc, ipv6=v6)
    r = default_route(box.proc)
    assert r.interface == "rmnet_data1"
    assert "ipv6_route" in r.evidence


def test_missing_proc_net(box: SimpleNamespace) -> None:
    r = default_route(box.proc)
    assert r.interface is None
    assert "not found" in r.evidence


def test_route_permission_denied_is_none(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    r = default_route(box.proc, DeniedFs())
    assert r.interface is None
    assert r.evidence.count("permission denied") == 2


def test_route_garbage_is_ignored(box: SimpleNamespace) -> None:
    write_route(box.proc, "wlan0 zz yy xx\n", "short\n", route_line("eth0"))
    assert default_route(box.proc).interface == "eth0"


# ---------------------------------------------------------------- sysfs


@pytest.mark.parametrize(
    ("name", "kwargs", "kind", "says"),
    [
        ("wlan0", {"wireless": True, "device": True}, "wifi", "wireless exists"),
        ("wlp2s0", {"phy80211": True, "device": True}, "wifi", "phy80211 exists"),
        ("mlan0", {"devtype": "wlan", "device": True}, "wifi", "DEVTYPE=wlan"),
        ("wwan0", {"devtype": "wwan", "device": True}, "cellular", "DEVTYPE=wwan"),
        ("rmnet_data0", {"arphrd": 519}, "cellular", "ARPHRD_RAWIP"),
        ("enp3s0", {"device": True}, "ethernet", "physical Ethernet"),
        ("lo", {"arphrd": 772}, "loopback", "772"),
    ],
)
def test_sysfs_kinds(box: SimpleNamespace, name: str, kwargs: dict[str, Any], kind: str, says: str) -> None:
    make_iface(box.sys, name, **kwargs)
    res = SysfsProbe(box.sys).probe(name)
    assert res.kind == kind
    assert res.metered is None
    assert says in res.evidence


@pytest.mark.parametrize(
    ("name", "kwargs", "says"),
    [
        ("veth1", {}, "virtual"),
        ("br0", {"devtype": "bridge"}, "DEVTYPE=bridge"),
        ("usb0", {"device": True}, "point-to-point USB"),
        ("tun0", {"arphrd": 65534}, "type 65534"),
    ],
)
def test_sysfs_abstains_on_virtual_and_ambiguous(
    box: SimpleNamespace, name: str, kwargs: dict[str, Any], says: str
) -> None:
    make_iface(box.sys, name, **kwargs)
    res = SysfsProbe(box.sys).probe(name)
    assert res.kind is None
    assert says in res.evidence


def test_sysfs_missing_interface_and_no_interface(box: SimpleNamespace) -> None:
    assert "does not exist" in SysfsProbe(box.sys).probe("wlan9").evidence
    assert SysfsProbe(box.sys).probe(None).kind is None
    assert SysfsProbe(box.sys).probe("../../etc").kind is None


def test_sysfs_permission_denied(box: SimpleNamespace) -> None:
    make_iface(box.sys, "wlan0", wireless=True)
    res = SysfsProbe(box.sys, DeniedFs()).probe("wlan0")
    assert res.kind is None
    assert "permission denied" in res.evidence


def test_sysfs_unreadable_files_inside_a_readable_dir(box: SimpleNamespace) -> None:
    class NoFiles(DeniedFs):
        def is_dir(self, path: Path) -> bool:
            return path.is_dir()

        def exists(self, path: Path) -> bool:
            return path.exists()

    make_iface(box.sys, "wwan0", devtype="wwan")
    res = SysfsProbe(box.sys, NoFiles()).probe("wwan0")
    assert res.kind is None
    assert "type unreadable" in res.evidence


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("iface", "kind"),
    [
        ("wlan0", "wifi"),
        ("wlp2s0", "wifi"),
        ("wlx00c0ca123456", "wifi"),
        ("wwan0", "cellular"),
        ("rmnet_data0", "cellular"),
        ("rmnet0", "cellular"),
        ("ccmni0", "cellular"),
        ("pdp_ip0", "cellular"),
        ("seth_lte0", "cellular"),
        ("v4-rmnet_data0", "cellular"),
        ("v4-wlan0", "wifi"),
        ("eth0", "ethernet"),
        ("enp3s0", "ethernet"),
        ("eno1", "ethernet"),
        ("lo", "loopback"),
        ("tun0", None),
        ("wg0", None),  # WireGuard, not Wi-Fi
        ("usb0", None),
        ("br0", None),
        ("ppp0", None),
    ],
)
def test_names(iface: str, kind: str | None) -> None:
    res = NamesProbe().probe(iface)
    assert res.kind == kind
    hit = kind_from_name(iface)
    assert (hit[0] if hit else None) == kind


def test_names_without_interface() -> None:
    assert NamesProbe().probe(None).kind is None


# ---------------------------------------------------------------- nmcli


def test_nmcli_wifi_unmetered(box: SimpleNamespace) -> None:
    exe = fake_nmcli(box.bin, nm_block("wlan0", "wifi", "no (guessed)"), nm_block("lo", "loopback", "unknown"))
    res = NetworkManagerProbe(runner(box)).probe("wlan0")
    assert (res.kind, res.metered) == ("wifi", False)
    assert "GENERAL.METERED=no (guessed)" in res.evidence
    args = Path(f"{exe}.args").read_text().split()
    assert args[:2] == ["-t", "-f"] and "GENERAL.METERED" in args[2] and args[3:] == ["device", "show"]


def test_nmcli_phone_hotspot_is_metered(box: SimpleNamespace) -> None:
    fake_nmcli(box.bin, nm_block("wlp2s0", "wifi", "yes (guessed)"))
    res = NetworkManagerProbe(runner(box)).probe("wlp2s0")
    assert (res.kind, res.metered) == ("wifi", True)


def test_nmcli_gsm_modem_matched_by_ip_interface(box: SimpleNamespace) -> None:
    fake_nmcli(
        box.bin,
        nm_block("wlan0", "wifi", "unknown", state="30 (disconnected)"),
        nm_block("cdc-wdm0", "gsm", "yes (guessed)", ip_iface="wwan0"),
    )
    res = NetworkManagerProbe(runner(box)).probe("wwan0")
    assert (res.kind, res.metered) == ("cellular", True)
    assert "cdc-wdm0" in res.evidence


def test_nmcli_ethernet(box: SimpleNamespace) -> None:
    fake_nmcli(box.bin, nm_block("enp3s0", "ethernet", "no"))
    res = NetworkManagerProbe(runner(box)).probe("enp3s0")
    assert (res.kind, res.metered) == ("ethernet", False)


def test_nmcli_without_default_route_prefers_ethernet_then_wifi(box: SimpleNamespace) -> None:
    fake_nmcli(
        box.bin,
        nm_block("cdc-wdm0", "gsm", "yes", ip_iface="wwan0"),
        nm_block("wlan0", "wifi", "no (guessed)"),
        nm_block("eth0", "ethernet", "unknown", state="20 (unavailable)"),
        nm_block("lo", "loopback", "unknown", state="100 (connected (externally))"),
    )
    res = NetworkManagerProbe(runner(box)).probe(None)
    assert (res.kind, res.metered) == ("wifi", False)
    assert "no default route known" in res.evidence


def test_nmcli_bridge_says_nothing_about_kind(box: SimpleNamespace) -> None:
    fake_nmcli(box.bin, nm_block("br0", "bridge", "unknown"))
    res = NetworkManagerProbe(runner(box)).probe("br0")
    assert (res.kind, res.metered) == (None, None)
    assert "bridge" in res.evidence


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ('echo "Error: NetworkManager is not running." >&2; exit 8', "exit 8: Error: NetworkManager is not running."),
        ("printf 'GENERAL.DEVICE:eth0\\nGENERAL.TYPE:ethernet\\n'", "wlan0 is not among NetworkManager's devices"),
        ("echo garbage", "listed no devices"),
        ("true", "listed no devices"),
    ],
)
def test_nmcli_failures_abstain(box: SimpleNamespace, script: str, says: str) -> None:
    write_exe(box.bin, "nmcli", script)
    res = NetworkManagerProbe(runner(box)).probe("wlan0")
    assert res.kind is None
    assert says in res.evidence


def test_nmcli_missing(box: SimpleNamespace) -> None:
    res = NetworkManagerProbe(runner(box)).probe("wlan0")
    assert res.kind is None
    assert "not found on PATH" in res.evidence


def test_nmcli_old_version_without_ip_iface(box: SimpleNamespace) -> None:
    body = (
        'case "$3" in *IP-IFACE*) echo "Error: invalid field \'GENERAL.IP-IFACE\'." >&2; exit 2;; esac\n'
        "printf 'GENERAL.DEVICE:wlan0\\nGENERAL.TYPE:wifi\\nGENERAL.STATE:100 (connected)\\nGENERAL.METERED:yes\\n'"
    )
    write_exe(box.bin, "nmcli", body)
    res = NetworkManagerProbe(runner(box)).probe("wlan0")
    assert (res.kind, res.metered) == ("wifi", True)


def test_nmcli_parsing_helpers() -> None:
    assert [nm_metered(v) for v in ("1", "2", "3", "4", "0", "yes", "guess-no", "unknown", "")] == [
        True,
        False,
        True,
        False,
        None,
        True,
        False,
        None,
        None,
    ]
    blocks = parse_nmcli_show("GENERAL.DEVICE:a\nGENERAL.HWADDR:00\\:11\nGENERAL.DEVICE:b\n\n\nnoise\n")
    assert blocks == [{"GENERAL.DEVICE": "a", "GENERAL.HWADDR": "00:11"}, {"GENERAL.DEVICE": "b"}]


# ---------------------------------------------------------------- Termux:API


def test_termux_wifi(box: SimpleNamespace) -> None:
    fake_termux(box.bin, WIFI_OK, PHONE_DATA)
    res = TermuxProbe(runner(box)).probe(None)
    assert (res.kind, res.metered) == ("wifi", None)
    assert "supplicant_state=COMPLETED" in res.evidence


def test_termux_cellular(box: SimpleNamespace) -> None:
    fake_termux(box.bin, WIFI_OFF, PHONE_DATA)
    res = TermuxProbe(runner(box)).probe(None)
    assert (res.kind, res.metered) == ("cellular", None)
    assert "data_state=connected network_type=lte" in res.evidence


def test_termux_neither(box: SimpleNamespace) -> None:
    fake_termux(box.bin, WIFI_OFF, PHONE_NO_DATA)
    res = TermuxProbe(runner(box)).probe(None)
    assert res.kind is None
    assert "supplicant_state=DISCONNECTED" in res.evidence and "data_state=disconnected" in res.evidence


@pytest.mark.parametrize(
    ("wifi", "phone", "says"),
    [
        ("not json {", "[1, 2]", "printed no JSON object"),
        ({"API_ERROR": "No current connection"}, {"API_ERROR": "permission"}, "API_ERROR"),
    ],
)
def test_termux_bad_output(box: SimpleNamespace, wifi: object, phone: object, says: str) -> None:
    fake_termux(box.bin, wifi, phone)
    res = TermuxProbe(runner(box)).probe(None)
    assert res.kind is None
    assert says in res.evidence


def test_termux_missing(box: SimpleNamespace) -> None:
    res = TermuxProbe(runner(box)).probe("wlan0")
    assert res.kind is None
    assert "termux-wifi-connectioninfo not found on PATH" in res.evidence


def test_termux_hang_is_cut_off_and_ends_the_probe(box: SimpleNamespace) -> None:
    write_exe(box.bin, "termux-wifi-connectioninfo", "sleep 10")  # not exec'd: the group kill matters
    phone = print_exe(box.bin, "termux-telephony-deviceinfo", json.dumps(PHONE_DATA))
    t0 = time.monotonic()
    res = TermuxProbe(runner(box, timeout=0.3)).probe(None)
    assert time.monotonic() - t0 < 2.0
    assert res.kind is None
    assert "timed out after 0.3 s" in res.evidence and "Termux:API app" in res.evidence
    assert not Path(f"{phone}.args").exists()  # the second command was not tried


# ---------------------------------------------------------------- the runner


def test_runner_reports_exit_status_and_output(box: SimpleNamespace) -> None:
    write_exe(box.bin, "ok", 'echo "hello $LC_ALL"')
    write_exe(box.bin, "bad", "echo out; echo 'it broke' >&2; exit 3")
    r = runner(box)
    assert r.run(["ok"]).stdout == "hello C\n"
    res = r.run(["bad"])
    assert not res.ok and res.error == "exit 3: it broke" and res.stdout == "out\n"
    assert r.run(["nope"]).error == "not found on PATH"
    with pytest.raises(ValueError, match="positive"):
        SubprocessRunner(timeout=0)


def test_runner_timeout_kills_quickly(box: SimpleNamespace) -> None:
    write_exe(box.bin, "hang", "exec sleep 10")
    t0 = time.monotonic()
    res = runner(box, timeout=0.3).run(["hang"])
    assert time.monotonic() - t0 < 2.0
    assert res.timed_out


def test_runner_permission_denied(box: SimpleNamespace, tmp_path: Path) -> None:
    interp = tmp_path / "not-executable"
    interp.write_text("")
    interp.chmod(0o644)
    write_exe(box.bin, "denied", "true", shebang=f"#!{interp}")
    res = runner(box).run(["denied"])
    assert res.error == "cannot run: permission denied"


# ---------------------------------------------------------------- the chain


def test_detect_wifi_from_sysfs(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True, device=True)
    info = detect(env=box.env)
    assert (info.interface, info.kind, info.metered, info.decided_by) == ("wlan0", "wifi", False, "sysfs")
    assert info.cost_per_gb == 0.0 and info.currency == "USD"
    assert info.metered_by == "default for wifi"
    assert info.evidence[0].startswith("route: default via wlan0")
    assert [e.split(":")[0] for e in info.evidence] == ["route", "config", "networkmanager", "termux", "sysfs"]
    assert "/sys/class/net/wlan0/wireless exists".replace("/sys", str(box.sys)) in info.evidence[-1]


def test_detect_cellular_via_wwan_is_metered_and_priced(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wwan0", gw="00000000"))
    make_iface(box.sys, "wwan0", devtype="wwan", device=True)
    info = detect(env=box.env)
    assert (info.kind, info.metered, info.metered_by, info.cost_per_gb) == (
        "cellular",
        True,
        "default for cellular",
        2.0,
    )


@pytest.mark.parametrize("iface", ["rmnet_data0", "ccmni0"])
def test_detect_cellular_by_name_when_sysfs_is_silent(box: SimpleNamespace, iface: str) -> None:
    write_route(box.proc, route_line(iface, gw="00000000"))
    info = detect(env=box.env)
    assert (info.interface, info.kind, info.metered, info.decided_by) == (iface, "cellular", True, "names")


def test_detect_ethernet_by_name(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("eth0"))
    make_iface(box.sys, "eth0")  # a veth: sysfs cannot tell
    info = detect(env=box.env)
    assert (info.kind, info.metered, info.decided_by) == ("ethernet", False, "names")


def test_detect_unknown_interface(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("tun0", gw="00000000"))
    info = detect(env=box.env)
    assert (info.kind, info.decided_by, info.metered, info.metered_by) == (
        "unknown",
        None,
        False,
        "default for unknown",
    )
    # "auto": an unknown network on Android counts as metered
    assert detect(env=replace(box.env, android=True)).metered is True


def test_nmcli_beats_sysfs(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    fake_nmcli(box.bin, nm_block("wlan0", "wifi", "yes (guessed)"))
    info = detect(env=box.env)
    assert (info.kind, info.metered, info.decided_by, info.metered_by) == (
        "wifi",
        True,
        "networkmanager",
        "networkmanager",
    )
    assert info.cost_per_gb == 2.0  # a phone hotspot costs what the phone's plan costs
    assert not any(e.startswith("sysfs") for e in info.evidence)


def test_nmcli_type_beats_sysfs_even_when_they_disagree(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("eth1"))
    make_iface(box.sys, "eth1", device=True)
    fake_nmcli(box.bin, nm_block("eth1", "gsm", "unknown"))
    info = detect(env=box.env)
    assert (info.kind, info.decided_by, info.metered, info.metered_by) == (
        "cellular",
        "networkmanager",
        True,
        "default for cellular",
    )


def test_termux_beats_sysfs_and_names_on_a_phone(box: SimpleNamespace) -> None:
    fake_termux(box.bin, WIFI_OFF, PHONE_DATA)
    info = detect(env=replace(box.env, fs=DeniedFs(), android=True))
    assert (info.interface, info.kind, info.metered, info.decided_by) == (None, "cellular", True, "termux")


def test_config_override_beats_everything(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    fake_nmcli(box.bin, nm_block("wlan0", "wifi", "no"))
    cfg = NetCostConfig(override=Override(kind="cellular", metered=False))
    info = detect(cfg, env=box.env)
    assert (info.kind, info.metered, info.decided_by, info.metered_by) == ("cellular", False, "config", "config")
    assert info.cost_per_gb == 2.0
    assert info.evidence[1] == "config: override kind=cellular metered=no"
    # the command line beats the config file
    info = detect(cfg, override=Override(kind="ethernet"), env=box.env)
    assert (info.kind, info.metered) == ("ethernet", False)


def test_metered_only_override_keeps_detecting_the_kind(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    info = detect(override=Override(metered=True), env=box.env)
    assert (info.kind, info.decided_by, info.metered, info.metered_by) == ("wifi", "sysfs", True, "config")


def test_override_interface_replaces_the_route(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("eth0"))
    make_iface(box.sys, "wlan1", wireless=True)
    info = detect(override=Override(interface="wlan1"), env=box.env)
    assert (info.interface, info.kind) == ("wlan1", "wifi")
    assert info.evidence[0] == "route: interface wlan1 set by override"


def test_permission_denied_everywhere_is_unknown_never_a_crash(box: SimpleNamespace, tmp_path: Path) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    interp = tmp_path / "not-executable"
    interp.write_text("")
    interp.chmod(0o644)
    for name in ("nmcli", "termux-wifi-connectioninfo", "termux-telephony-deviceinfo", "termux-battery-status"):
        write_exe(box.bin, name, "true", shebang=f"#!{interp}")
    env = replace(box.env, fs=DeniedFs())
    info = detect(env=env)
    assert (info.interface, info.kind, info.decided_by) == (None, "unknown", None)
    assert info.metered is False  # not Android: unknown defaults to unmetered
    text = "\n".join(info.evidence)
    assert text.count("permission denied") >= 5  # route, ipv6_route, nmcli, 2 x termux
    report = netinfo_report(config=NetCostConfig(), env=env)
    assert report["kind"] == "unknown"
    json.dumps(report)


def test_hung_commands_are_cut_off(box: SimpleNamespace) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    write_exe(box.bin, "nmcli", "sleep 10; echo GENERAL.DEVICE:wlan0")
    write_exe(box.bin, "termux-wifi-connectioninfo", "exec sleep 10")
    env = replace(box.env, timeout=0.3, termux_timeout=0.3)
    t0 = time.monotonic()
    info = detect(env=env)
    assert time.monotonic() - t0 < 3.0
    assert (info.kind, info.decided_by) == ("wifi", "sysfs")
    assert "networkmanager: nmcli timed out after 0.3 s" in info.evidence


def test_a_broken_probe_does_not_crash_the_chain() -> None:
    class Broken:
        name = "broken"

        def probe(self, iface: str | None) -> ProbeResult:
            raise RuntimeError("boom")

    info = detect(
        probes=[Broken(), NamesProbe()],
        override=Override(interface="wlan0"),
        env=ProbeEnv(fs=DeniedFs(), android=False),
    )
    assert (info.kind, info.decided_by) == ("wifi", "names")
    assert "broken: failed: RuntimeError: boom" in info.evidence


def test_config_probe_alone() -> None:
    assert ConfigProbe().probe("x").kind is None
    assert ConfigProbe(Override(kind="wifi")).probe(None) == ProbeResult("wifi", None, "override kind=wifi")


# ---------------------------------------------------------------- cost file


def test_shipped_cost_file_is_valid_and_says_the_defaults() -> None:
    cfg = load_netcost(ROOT / "configs" / "cost.toml")
    assert cfg == NetCostConfig()
    assert cfg.source == ROOT / "configs" / "cost.toml"
    assert load_netcost(None) == NetCostConfig()


def test_cost_values_are_applied(tmp_path: Path) -> None:
    p = tmp_path / "cost.toml"
    p.write_text(
        'currency = "EUR"\n[cost_per_gb]\ncellular = 0\nmetered = 5\n[metered]\ncellular = false\nunknown = true\n'
        '[override]\nkind = "wifi"\nmetered = true\ninterface = "wlan0"\n'
        "[run]\nrelay_only_unmetered = false\nmin_battery_percent = 80\ntrain_without_battery_info = false\n"
        "[probe]\ntimeout = 1\ninterval = 30\n"
    )
    cfg = load_netcost(p)
    assert cfg.currency == "EUR"
    assert cfg.cost_for("cellular", False) == 0.0
    assert cfg.cost_for("cellular", True) == 5.0
    assert cfg.cost_for("wifi", True) == 5.0
    assert cfg.default_metered("cellular", android=True) is False
    assert cfg.default_metered("unknown", android=False) is True
    assert cfg.override == Override(kind="wifi", metered=True, interface="wlan0")
    assert cfg.run == RunConditions(
        relay_only_unmetered=False, min_battery_percent=80, train_without_battery_info=False
    )
    assert (cfg.probe.timeout, cfg.probe.termux_timeout, cfg.probe.interval) == (1.0, 4.0, 30.0)


def test_cost_defaults() -> None:
    cfg = NetCostConfig()
    assert cfg.cost_for("wifi", False) == 0.0
    assert cfg.cost_for("cellular", True) == 2.0
    assert cfg.default_metered("unknown", android=True) is True
    assert cfg.default_metered("unknown", android=False) is False


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[costs]\n", "unknown table or key 'costs'"),
        ("[cost_per_gb]\nwlan = 1\n", "unknown key cost_per_gb.wlan"),
        ("[cost_per_gb]\ncellular = -1\n", "cost_per_gb.cellular must be a number >= 0"),
        ("[cost_per_gb]\ncellular = 'two'\n", "cost_per_gb.cellular must be a number"),
        ("[cost_per_gb]\ncellular = true\n", "cost_per_gb.cellular must be a number"),
        ("[cost_per_gb]\ncellular = nan\n", "cost_per_gb.cellular must be a number"),
        ("cost_per_gb = 3\n", r"\[cost_per_gb\] must be a table"),
        ("currency = ''\n", "currency must be a short name"),
        ("currency = 3\n", "currency must be a short name"),
        ("[metered]\nwifi = 'auto'\n", "metered.wifi must be true or false"),
        ("[metered]\nunknown = 'maybe'\n", 'metered.unknown must be true, false or "auto"'),
        ("[metered]\nsatellite = true\n", "unknown key metered.satellite"),
        ("[override]\nkind = 'lte'\n", "override.kind must be one of"),
        ("[override]\nmetered = 'yes'\n", "override.metered must be true or false"),
        ("[override]\ninterface = '../etc'\n", "override.interface must be an interface name"),
        ("[override]\ninterface = 'averyveryverylongname'\n", "override.interface"),
        ("[override]\nnetwork = 'wifi'\n", "unknown key override.network"),
        ("[run]\nmin_battery_percent = 101\n", "min_battery_percent must be a number from 0 to 100"),
        ("[run]\ntrain_when_charging = 1\n", "run.train_when_charging must be true or false"),
        ("[run]\nrelay = true\n", "unknown key run.relay"),
        ("[probe]\ntimeout = 0\n", "probe.timeout must be a number of seconds"),
        ("[probe]\ntermux_timeout = 600\n", "at most 60"),
        ("[probe]\ninterval = -5\n", "probe.interval"),
        ("[cost_per_gb\n", "not valid TOML"),
    ],
)
def test_cost_file_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "cost.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_netcost(p)


def test_cost_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_netcost(tmp_path / "nope.toml")


# ---------------------------------------------------------------- run conditions and battery


def net(kind: str, metered: bool) -> NetInfo:
    return NetInfo("x0", kind, metered, 0.0, "USD", "names", "default", ())  # type: ignore[arg-type]


def test_may_relay() -> None:
    rc = RunConditions()
    assert rc.may_relay(net("wifi", False)) == (True, "unmetered wifi network")
    ok, why = rc.may_relay(net("cellular", True))
    assert not ok and "metered cellular" in why
    assert RunConditions(relay_only_unmetered=False).may_relay(net("cellular", True))[0] is True


@pytest.mark.parametrize(
    ("rc", "battery", "allowed", "says"),
    [
        (RunConditions(), None, True, "no battery information"),
        (RunConditions(train_without_battery_info=False), None, False, "train_without_battery_info is off"),
        (RunConditions(), BatteryState(10, True, "t"), True, "on external power (battery 10%)"),
        (RunConditions(), BatteryState(80, False, "t"), True, "on battery, battery 80% >= 50%"),
        (RunConditions(), BatteryState(30, False, "t"), False, "on battery, battery 30% < 50%"),
        (RunConditions(), BatteryState(30, None, "t"), False, "power source unknown"),
        (RunConditions(train_on_battery=False), BatteryState(99, False, "t"), False, "train_on_battery is off"),
        (RunConditions(train_on_battery=False), BatteryState(5, True, "t"), True, "on external power"),
        (RunConditions(train_when_charging=False), BatteryState(20, True, "t"), False, "does not count"),
        (RunConditions(train_when_charging=False), BatteryState(60, True, "t"), True, ">= 50%"),
        (RunConditions(min_battery_percent=0), BatteryState(0, False, "t"), True, ">= 0%"),
    ],
)
def test_may_train(rc: RunConditions, battery: BatteryState | None, allowed: bool, says: str) -> None:
    ok, why = rc.may_train(battery)
    assert ok is allowed
    assert says in why


def test_run_conditions_validate() -> None:
    with pytest.raises(ValueError, match="min_battery_percent"):
        RunConditions(min_battery_percent=150)


def test_read_battery_psutil_then_termux(box: SimpleNamespace) -> None:
    def psutil_like() -> object:
        return SimpleNamespace(percent=42.5, power_plugged=True, secsleft=-2)

    def no_psutil() -> object:
        raise ImportError("No module named 'psutil'")

    assert read_battery(psutil_like) == BatteryState(42.5, True, "psutil.sensors_battery")
    assert read_battery(lambda: SimpleNamespace(percent=90, power_plugged=None)) == BatteryState(
        90.0, None, "psutil.sensors_battery"
    )
    assert read_battery(no_psutil) is None
    assert read_battery(lambda: None, runner(box)) is None  # no battery, no Termux:API
    print_exe(box.bin, "termux-battery-status", json.dumps({"percentage": 77, "plugged": "UNPLUGGED"}))
    assert read_battery(no_psutil, runner(box)) == BatteryState(77.0, False, "termux-battery-status")
    print_exe(box.bin, "termux-battery-status", json.dumps({"percentage": 15, "plugged": "PLUGGED_USB"}))
    assert read_battery(None, runner(box)) == BatteryState(15.0, True, "termux-battery-status")
    print_exe(box.bin, "termux-battery-status", "oops")
    assert read_battery(None, runner(box)) is None


def test_real_read_battery_does_not_crash() -> None:
    state = read_battery()
    assert state is None or 0 <= state.percent <= 100


# ---------------------------------------------------------------- watcher


def test_net_watcher() -> None:
    w = NetWatcher()
    wifi = net("wifi", False)
    first = w.update(wifi)
    assert first is not None and first.initial and not first.became_metered
    assert w.update(replace(wifi, evidence=("new wording",))) is None
    assert w.current is not None and w.current.evidence == ("new wording",)
    hotspot = replace(wifi, metered=True, cost_per_gb=2.0)
    change = w.update(hotspot)
    assert change is not None and change.changed == ("metered", "cost_per_gb") and change.became_metered
    cell = replace(hotspot, interface="rmnet_data0", kind="cellular")
    change = w.update(cell)
    assert change is not None and change.changed == ("interface", "kind") and not change.became_metered
    back = w.update(wifi)
    assert back is not None and back.became_unmetered


def test_net_watcher_confirm_ignores_one_off_blips() -> None:
    w = NetWatcher(confirm=2)
    wifi, unknown, cell = net("wifi", False), net("unknown", False), net("cellular", True)
    w.update(wifi)
    assert w.update(unknown) is None  # one blip
    assert w.update(wifi) is None  # back: nothing happened
    assert w.update(cell) is None
    change = w.update(cell)
    assert change is not None and change.previous == wifi and change.became_metered
    assert w.current == cell
    with pytest.raises(ValueError, match="confirm"):
        NetWatcher(confirm=0)


# ---------------------------------------------------------------- netinfo


def test_netinfo_report_and_text(box: SimpleNamespace, tmp_path: Path) -> None:
    write_route(box.proc, route_line("wlan0"))
    make_iface(box.sys, "wlan0", wireless=True)
    fake_nmcli(box.bin, nm_block("wlan0", "wifi", "yes (guessed)"))
    cost = tmp_path / "cost.toml"
    cost.write_text("[run]\nmin_battery_percent = 60\n")
    report = netinfo_report(cost, env=box.env, battery=lambda: BatteryState(55, False, "fake"))
    assert json.loads(json.dumps(report)) == report
    assert report["kind"] == "wifi" and report["metered"] is True and report["decided_by"] == "networkmanager"
    assert report["cost_per_gb"] == 2.0 and report["currency"] == "USD"
    assert report["may_relay"]["allowed"] is False
    assert report["may_train"] == {"allowed": False, "reason": "on battery, battery 55% < 60%"}
    assert report["battery"] == {"percent": 55, "charging": False, "source": "fake"}
    assert report["cost_file"] == str(cost)
    text = format_netinfo(report)
    assert "kind       wifi (decided by networkmanager)" in text
    assert "metered    yes (networkmanager)" in text
    assert "nmcli: wlan0 GENERAL.TYPE=wifi GENERAL.METERED=yes (guessed)" in text
    with pytest.raises(ConfigError):
        netinfo_report(tmp_path / "missing.toml", env=box.env)


def test_netinfo_on_this_machine_does_not_crash() -> None:
    report = netinfo_report()
    assert report["kind"] in ("wifi", "ethernet", "cellular", "loopback", "unknown")
    assert format_netinfo(report).startswith("interface")
