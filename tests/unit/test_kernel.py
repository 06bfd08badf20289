"""musersd.kernel: the sentences it builds, and where its answer comes from when it cannot ask."""

from __future__ import annotations

import os

import pytest

from musersd import kernel
from musersd.kernel import MulticastRouting


def test_nothing_missing_is_no_sentence():
    k = MulticastRouting(ipv4=True, ipv6=True, release="6.1.0-57-amd64")
    assert k.missing() is None and k.problem() is None


@pytest.mark.parametrize("v4, v6, ipv6, want", [
    (False, False, True,
     "cannot route IPv4 and IPv6 multicast (built without CONFIG_IP_MROUTE and CONFIG_IPV6_MROUTE)"),
    (False, True, True, "cannot route IPv4 multicast (built without CONFIG_IP_MROUTE)"),
    (True, False, True, "cannot route IPv6 multicast (built without CONFIG_IPV6_MROUTE)"),
    (False, False, False, "cannot route IPv4 multicast (built without CONFIG_IP_MROUTE)"),
])
def test_what_is_missing_names_the_kernel_options(v4, v6, ipv6, want):
    k = MulticastRouting(ipv4=v4, ipv6=v6, release="6.18.44")
    assert k.missing(ipv6) == f"kernel 6.18.44 {want}"
    problem = k.problem(ipv6)
    assert problem.startswith(k.missing(ipv6) + ": ") and "python -m lab.vm" in problem and "\n" not in problem
    wanted = problem.rsplit("built with ", 1)[1]
    assert ("CONFIG_IP_MROUTE=y" in wanted) == (not v4)
    assert ("CONFIG_IPV6_MROUTE=y" in wanted) == (ipv6 and not v6)


def test_only_ipv6_missing_is_no_problem_for_an_ipv4_lab():
    assert MulticastRouting(ipv4=True, ipv6=False, release="x").problem(ipv6=False) is None


@pytest.mark.parametrize("exists", [set(), {"/proc/net/ip_mr_vif"}, {"/proc/net/ip_mr_vif", "/proc/net/ip6_mr_vif"}])
def test_without_the_right_to_ask_the_proc_files_answer(monkeypatch, exists):
    monkeypatch.setattr(kernel, "_probe", lambda: (None, None))  # no CAP_NET_RAW: no raw socket
    monkeypatch.setattr(os.path, "exists", lambda p: p in exists)
    k = kernel.multicast_routing()
    assert (k.ipv4, k.ipv6) == ("/proc/net/ip_mr_vif" in exists, "/proc/net/ip6_mr_vif" in exists)


def test_a_probe_that_could_ask_is_believed_over_the_proc_files(monkeypatch):
    monkeypatch.setattr(kernel, "_probe", lambda: (True, False))
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    k = kernel.multicast_routing()
    assert (k.ipv4, k.ipv6) == (True, False)
