// SPDX-License-Identifier: GPL-2.0
/* The lab's traffic generator (bench/livegen.py), run with BPF_PROG_TEST_RUN
 * in live-frames mode.
 *
 * Each run rewrites the frame from the next template of gen_tpl (source,
 * group, TTL, IPv4 checksum, multicast MAC), going round the first
 * gen_count templates per CPU, and returns XDP_TX: the kernel sends the
 * frame out of the device named in the context.
 *
 * gen_tpl's size is set by the loader (BPFObject.set_max_entries) to
 * livegen.MAX_TEMPLATES; the 1 below is never loaded.
 *
 * Compiled by scripts/build_bench_bpf.sh into livegen.bpf.o next to this file.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

/* bench/livegen.py _Template mirrors this layout. */
struct gen_tpl {
    __be32 saddr;
    __be32 daddr;
    __u8 ttl;
    __u8 pad;
    __u16 check;
    __u8 dmac[6];
    __u16 pad2;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct gen_tpl);
    __uint(max_entries, 1);
} gen_tpl SEC(".maps");

/* The number of templates in use. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 1);
} gen_count SEC(".maps");

/* The next template, per CPU. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 1);
} gen_next SEC(".maps");

SEC("xdp")
int gen(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    __u32 zero = 0, i;
    __u32 *next, *count;
    struct gen_tpl *t;

    if ((void *)(ip + 1) > end)
        return XDP_ABORTED;
    next = bpf_map_lookup_elem(&gen_next, &zero);
    count = bpf_map_lookup_elem(&gen_count, &zero);
    if (!next || !count)
        return XDP_ABORTED;
    i = *next;
    *next = i + 1 >= *count ? 0 : i + 1;
    t = bpf_map_lookup_elem(&gen_tpl, &i);
    if (!t)
        return XDP_ABORTED;
    __builtin_memcpy(eth->h_dest, t->dmac, 6);
    ip->saddr = t->saddr;
    ip->daddr = t->daddr;
    ip->ttl = t->ttl;
    ip->check = t->check;
    return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
