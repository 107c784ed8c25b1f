// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
/*
 * cutover's XDP program for the af_xdp driver.
 *
 * Frames addressed to a live VIP go to the AF_XDP socket of the RX queue
 * they arrived on; everything else (ARP, NDP, DNS, SSH, the admin API,
 * traffic to the host's own addresses) is passed to the kernel, so the host
 * keeps working on the interface the data plane uses.
 *
 * The VIP set lives in the hash map `vips`, keyed by the 16-byte address
 * (IPv4 as IPv4-mapped IPv6, ::ffff:a.b.c.d); the control plane writes it,
 * this program only reads it. `xsks` maps a queue id to its socket; a
 * queue without a socket falls back to XDP_PASS (bpf_redirect_map's flags).
 *
 * Built by build.rs with `clang -O2 -g -target bpf`; loaded by aya.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256
#define MAX_VIPS 65536

struct vip_key {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, __u8);
} vips SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

SEC("xdp")
int xdp_vip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vip_key key = {};
	void *l3;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	proto = eth->h_proto;
	l3 = eth + 1;
	/* One optional 802.1Q (or 802.1ad) tag. */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return XDP_PASS;
		proto = vlan->proto;
		l3 = vlan + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = l3;

		if ((void *)(ip4 + 1) > data_end)
			return XDP_PASS;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip4->daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
	} else {
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&vips, &key))
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
