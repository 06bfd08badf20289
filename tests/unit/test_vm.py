"""lab.vm's choices that need no guest: where the lab runs, what is shared, its command line."""

from __future__ import annotations

import pytest

from lab import vm


@pytest.mark.parametrize("cwd, shared", [
    ("/work/main", True), ("/tmp/checks", True), ("/root/src/mauth", True),
    ("/", False), ("/tmp", False), ("/etc", False), ("/usr", False), ("/root", False), ("/proc/self", False),
    ("/run/user/0", False), ("/sys/fs/bpf", False),
])
def test_only_a_project_directory_is_shared_read_write(cwd, shared):
    assert vm._shareable(cwd) is shared


@pytest.mark.parametrize("value, where", [("host", "host"), ("guest", "guest"), ("GUEST", "guest")])
def test_mauth_lab_kernel_forces_where_the_lab_runs(monkeypatch, value, where):
    monkeypatch.delenv(vm.ENV_IN_VM, raising=False)
    monkeypatch.setenv(vm.ENV_LAB_KERNEL, value)
    assert vm.lab_kernel() == where


def test_in_the_guest_the_lab_runs_on_its_kernel(monkeypatch):
    monkeypatch.setenv(vm.ENV_IN_VM, "6.1.0-57-amd64 tcg")
    monkeypatch.setenv(vm.ENV_LAB_KERNEL, "guest")
    assert vm.lab_kernel() == "host"


def test_an_unknown_mauth_lab_kernel_is_one_clear_error(monkeypatch):
    monkeypatch.delenv(vm.ENV_IN_VM, raising=False)
    monkeypatch.setenv(vm.ENV_LAB_KERNEL, "kvm")
    with pytest.raises(vm.VMError, match="not one of host, guest, auto"):
        vm.lab_kernel()


def test_the_command_follows_the_double_dash():
    args = vm.parse_args(["--timeout", "30", "--", "ls", "-l", "--", "x"])
    assert args.command == ["ls", "-l", "--", "x"] and args.timeout == 30


def test_no_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        vm.parse_args([])
    assert exc.value.code == 2 and "no command given" in capsys.readouterr().err
