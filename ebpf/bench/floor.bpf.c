// SPDX-License-Identifier: GPL-2.0
/* The benchmarks' reference XDP programs (bench/xdp_cost.py, bench/forwarding.py).
 *
 * bench_floor returns XDP_PASS and does nothing else: the floor that the
 * filter's cost is measured against, and the "empty XDP program" guard of
 * the forwarding benchmark. bench_sink drops everything: the lab's receiver
 * runs it so that what it receives costs as little as possible.
 *
 * Compiled by scripts/build_bench_bpf.sh into floor.bpf.o next to this file.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bench_floor(struct xdp_md *ctx)
{
    return XDP_PASS;
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
