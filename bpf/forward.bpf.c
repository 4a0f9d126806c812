// In-kernel forwarding for stolon-proxy (--kernel-forwarding, src/proxy/kernel.rs): every byte a
// client or its master sends is moved by the kernel straight to the other socket of the session,
// without waking the proxy. The proxy keeps every decision: it inserts a session's two sockets
// after dialing, and ends a session by closing them (the kernel then drops them from the map).
//
// Built by build.rs with `clang -target bpf` when the `kernel-forwarding` feature is on.
// SPDX-License-Identifier: Apache-2.0 (its helpers are not GPL-only, so the kernel accepts it)

#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

// A socket as a received skb sees it: addresses as the kernel stores them (network order),
// ports in host order. src/proxy/kernel.rs builds the same key from the socket's addresses.
struct endpoint {
	__u32 local_ip4;
	__u32 remote_ip4;
	__u32 local_port;
	__u32 remote_port;
};

struct {
	int (*type)[BPF_MAP_TYPE_SOCKHASH];
	int (*max_entries)[65536];
	struct endpoint *key;
	__u32 *value;
} sockets SEC(".maps");

// Each session socket's peer: client -> master socket, master socket -> client.
struct {
	int (*type)[BPF_MAP_TYPE_HASH];
	int (*max_entries)[65536];
	struct endpoint *key;
	struct endpoint *value;
} peers SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_sk_redirect_hash)(struct __sk_buff *skb, void *map, void *key, __u64 flags) =
	(void *)BPF_FUNC_sk_redirect_hash;

SEC("sk_skb/stream_verdict")
int forward(struct __sk_buff *skb)
{
	struct endpoint self = {
		.local_ip4 = skb->local_ip4,
		.remote_ip4 = skb->remote_ip4,
		.local_port = skb->local_port,
		// The kernel exposes the remote port in network order in the upper 16 bits.
		.remote_port = __builtin_bswap32(skb->remote_port),
	};
	struct endpoint *peer = bpf_map_lookup_elem(&peers, &self);
	if (!peer)
		return SK_PASS; // not forwarded: the proxy reads it itself
	return bpf_sk_redirect_hash(skb, &sockets, peer, 0);
}

char _license[] SEC("license") = "Apache-2.0";
