/* See dpdk_shim.h. Compiled by build.rs with the `dpdk` feature only. */
#include <errno.h>
#include <string.h>

#include "dpdk_shim.h"

int cutover_errno(void) { return rte_errno; }

uint16_t cutover_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

uint16_t cutover_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t cutover_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *cutover_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void cutover_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

char *cutover_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }

char *cutover_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }

int cutover_thread_register(void)
{
	unsigned id;

	if (rte_thread_register() != 0)
		return -1;
	id = rte_lcore_id();
	return id == LCORE_ID_ANY ? -1 : (int)id;
}

void cutover_thread_unregister(struct rte_mempool *mp)
{
	struct rte_mempool_cache *c = rte_mempool_default_cache(mp, rte_lcore_id());

	if (c != NULL)
		rte_mempool_cache_flush(c, mp);
	rte_thread_unregister();
}

unsigned cutover_mempool_cached(struct rte_mempool *mp)
{
	struct rte_mempool_cache *c = rte_mempool_default_cache(mp, rte_lcore_id());

	return c == NULL ? 0 : c->len;
}

/* A symmetric Toeplitz key: both directions of a flow hash alike. */
static uint8_t symmetric_rss_key[40] = {
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

int cutover_port_setup(uint16_t port, uint16_t nb_queues, uint16_t nb_rxd,
                       uint16_t nb_txd, struct rte_mempool *const *pools,
                       int promiscuous, const char **step)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	int rc, socket;
	uint16_t q;

	memset(&conf, 0, sizeof(conf));
	*step = "rte_eth_dev_info_get";
	rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	*step = "queue count (more than the device offers)";
	if (nb_queues == 0 || nb_queues > info.max_rx_queues || nb_queues > info.max_tx_queues)
		return -EINVAL;
	if (nb_queues > 1) {
		uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) &
			      info.flow_type_rss_offloads;
		if (hf != 0) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
			if (info.hash_key_size == sizeof(symmetric_rss_key)) {
				conf.rx_adv_conf.rss_conf.rss_key = symmetric_rss_key;
				conf.rx_adv_conf.rss_conf.rss_key_len = sizeof(symmetric_rss_key);
			}
		}
	}
	*step = "rte_eth_dev_configure";
	rc = rte_eth_dev_configure(port, nb_queues, nb_queues, &conf);
	if (rc != 0)
		return rc;
	*step = "rte_eth_dev_adjust_nb_rx_tx_desc";
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
	if (rc != 0)
		return rc;
	socket = rte_eth_dev_socket_id(port);
	if (socket < 0)
		socket = SOCKET_ID_ANY;
	for (q = 0; q < nb_queues; q++) {
		*step = "rte_eth_rx_queue_setup";
		rc = rte_eth_rx_queue_setup(port, q, nb_rxd, (unsigned int)socket, NULL, pools[q]);
		if (rc != 0)
			return rc;
		*step = "rte_eth_tx_queue_setup";
		rc = rte_eth_tx_queue_setup(port, q, nb_txd, (unsigned int)socket, NULL);
		if (rc != 0)
			return rc;
	}
	if (promiscuous) {
		*step = "rte_eth_promiscuous_enable";
		rc = rte_eth_promiscuous_enable(port);
		if (rc != 0 && rc != -ENOTSUP)
			return rc;
	}
	*step = "rte_eth_dev_start";
	return rte_eth_dev_start(port);
}
