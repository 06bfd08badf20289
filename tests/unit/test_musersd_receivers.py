"""musersd applies the rule file's receiver and interface lines, at start and on SIGHUP, and sweeps joined groups.

The daemon runs on the fake data plane with a receiver half
(tests/support/fake_receivers.py), driven through its own methods: the
start-up step that applies the receivers, reload() as SIGHUP calls it, and
sweep() as the loop calls it once a second. The same daemon against the real
filter is tests/integration/test_musersd_receivers.py.
"""

from __future__ import annotations

import ipaddress
import logging

import pytest
from click.testing import CliRunner

from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Rule
from musersd.cli import main
from musersd.daemon import Musersd, Options, StartupError
from musersd.filter import DataPlaneError
from tests.support.fake_dataplane import FakeDataPlane
from tests.support.fake_receivers import FakeReceivingDataPlane

FILE = """\
192.0.2.10 239.1.1.1 16
receiver 10.1.0.0/24 239.1.0.0/16 iface=eth1
receiver 10.1.0.7 232.1.1.1 source=192.0.2.10
interface eth1 closed limit=20
interface eth2 monitor
"""
G = ipaddress.IPv4Address


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000_000

    def __call__(self) -> int:
        return self.ns


def daemon(tmp_path, text: str = FILE, **kw) -> tuple[Musersd, FakeReceivingDataPlane, Clock]:
    conf = tmp_path / "mauth.conf"
    conf.write_text(text)
    m = Musersd(Options(ifaces=["eth1", "eth2"], config=str(conf), **kw))
    clock = Clock()
    m.dp = dp = FakeReceivingDataPlane(clock=clock)
    dp.apply(m.rule_file.rules)
    m._apply_receivers(m.rule_file)
    return m, dp, clock


def test_start_applies_the_files_receivers_and_policies(tmp_path):
    m, dp, _ = daemon(tmp_path)
    assert set(dp.held) == {ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1"),
                            ReceiverRule.make("10.1.0.7", "232.1.1.1", source="192.0.2.10")}
    assert dp.policies == {"eth1": IfacePolicy.make("eth1", "closed", 20), "eth2": IfacePolicy.make("eth2", "monitor")}


def test_reload_replaces_the_receivers_and_resets_unnamed_interfaces(tmp_path, caplog):
    m, dp, _ = daemon(tmp_path)
    (tmp_path / "mauth.conf").write_text("192.0.2.10 239.1.1.1 16\nreceiver 0.0.0.0/0 239.2.0.0/16\n"
                                         "interface eth2 closed\n")
    with caplog.at_level(logging.INFO, logger="musersd"):
        m.reload()
    assert set(dp.held) == {ReceiverRule.make("0.0.0.0/0", "239.2.0.0/16")}
    assert dp.policies == {"eth1": IfacePolicy("eth1"), "eth2": IfacePolicy.make("eth2", "closed")}
    assert "1 rules added, 2 removed" in caplog.text and "eth1 open" in caplog.text
    assert m.rule_file.receivers == (ReceiverRule.make("0.0.0.0/0", "239.2.0.0/16"),)


@pytest.mark.parametrize("text,why", [
    ("receiver 10.1.0.0/24 239.1.0.0/16 iface=eth9\n", "names interface eth9, which musersd does not guard"),
    ("interface eth9 closed\n", "the interface line for eth9 names interface eth9"),
    ("interface eth1 closed\ninterface eth1 open\n", "already set on line 1"),
    ("receiver 10.1.0.0/24 239.1.0.0/16\nreceiver 10.1.0.0/24 239.1.0.0/16\n", "already on line 1"),
    ("".join(f"receiver 10.{i // 256}.{i % 256}.0/24 239.1.0.0/16\n" for i in range(513)), "more than the 512"),
])
def test_a_bad_file_on_reload_keeps_the_running_receivers(tmp_path, caplog, text, why):
    m, dp, _ = daemon(tmp_path)
    before = (dict(dp.held), dict(dp.policies), list(dp.rule_keys()))
    (tmp_path / "mauth.conf").write_text(text)
    with caplog.at_level(logging.ERROR, logger="musersd"):
        m.reload()
    assert (dict(dp.held), dict(dp.policies), list(dp.rule_keys())) == before
    assert "rule file rejected" in caplog.text and why in caplog.text
    with pytest.raises(StartupError, match=why):
        Musersd(Options(ifaces=["eth1", "eth2"], config=str(tmp_path / "mauth.conf")))


def test_receiver_lines_need_a_filter_that_judges_reports(tmp_path):
    conf = tmp_path / "mauth.conf"
    conf.write_text(FILE)
    with pytest.raises(StartupError, match="nfqueue backend does not judge membership reports"):
        Musersd(Options(ifaces=["eth1", "eth2"], config=str(conf), backend="nfqueue",
                        state_dir=str(tmp_path / "s")))
    m = Musersd(Options(ifaces=["eth1", "eth2"], config=str(conf)))
    m.dp = FakeDataPlane()
    with pytest.raises(DataPlaneError, match="does not judge membership reports"):
        m._apply_receivers(m.rule_file)
    conf.write_text("192.0.2.10 239.1.1.1 16\n")  # sender rules only: nothing to apply, nothing refused
    m = Musersd(Options(ifaces=["eth1", "eth2"], config=str(conf)))
    m.dp = FakeDataPlane()
    m._apply_receivers(m.rule_file)
    m.sweep(10.0)  # and no sweep to run


def test_sweep_once_a_second_forgets_expired_and_left_groups(tmp_path):
    m, dp, clock = daemon(tmp_path, group_timeout=260.0, leave_grace=3.0)
    dp.join("eth1", G("239.1.2.3"), G("10.1.0.7"))
    dp.join("eth1", G("239.1.2.4"), G("10.1.0.8"))
    clock.ns += 100 * 10**9
    dp.join("eth2", G("239.1.2.5"), G("10.2.0.9"))
    clock.ns += 10**6
    dp.leave("eth2", G("239.1.2.5"))  # a leave after its last report
    clock.ns += 2 * 10**9
    m.sweep(100.0)
    assert len(dp.groups) == 3 and dp.calls[-1] == ("sweep_groups", (260 * 10**9, 3 * 10**9))
    clock.ns += 2 * 10**9  # the leave is 4 s old
    m.sweep(100.5)  # not a second since the last sweep: nothing done
    assert len(dp.groups) == 3
    m.sweep(101.0)
    assert set(dp.groups) == {("eth1", G("239.1.2.3")), ("eth1", G("239.1.2.4"))}
    clock.ns += 157 * 10**9  # 261 s since the first two reports
    m.sweep(102.0)
    assert dp.groups == {}


def test_a_failing_sweep_is_logged_once_and_never_raised(tmp_path, caplog):
    m, dp, _ = daemon(tmp_path)
    failures = [DataPlaneError("the joined-groups map is gone"), OSError(9, "Bad file descriptor")]

    def sweep(timeout_ns: int, grace_ns: int) -> int:
        if failures:
            raise failures[0]
        return 0
    dp.sweep_groups = sweep  # type: ignore[method-assign]  # the failure under test
    with caplog.at_level(logging.INFO, logger="musersd"):
        m.sweep(1.0)
        m.sweep(2.0)  # the same failure: not logged again
        failures.pop(0)
        m.sweep(3.0)
        failures.pop(0)
        m.sweep(4.0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "map is gone" in errors[0] and "Bad file descriptor" in errors[1]
    assert "sweeping the joined groups works again" in caplog.text


def test_cli_group_timeout_and_leave_grace():
    out = CliRunner().invoke(main, ["--help"]).output
    assert "--group-timeout" in out and "260" in out and "--leave-grace" in out
    bad = CliRunner().invoke(main, ["--iface", "eth1", "--group-timeout", "0"])
    assert bad.exit_code == 2 and "--group-timeout" in bad.output
    assert Options(ifaces=["eth1"]).group_timeout == 260.0 and Options(ifaces=["eth1"]).leave_grace == 3.0
    assert Rule  # the sender rules ride along in every file above
