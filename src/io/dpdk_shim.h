/* The C side of cutover's DPDK driver (src/io/dpdk.rs).
 *
 * bindgen reads this header: the DPDK types and functions it includes, and
 * the shim below. The shim exists for what bindgen cannot bind: DPDK's
 * static inline fast-path functions (burst receive and send, mbuf
 * alloc/free/prepend/adj), the per-lcore rte_errno, macros built from
 * RTE_BIT64, and the port setup, which is plain C over DPDK's large
 * configuration structs. */
#ifndef CUTOVER_DPDK_SHIM_H
#define CUTOVER_DPDK_SHIM_H

#include <stdint.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

int cutover_errno(void);
uint16_t cutover_pktmbuf_headroom(void);

uint16_t cutover_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t cutover_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *cutover_pktmbuf_alloc(struct rte_mempool *mp);
void cutover_pktmbuf_free(struct rte_mbuf *m);
char *cutover_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *cutover_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);

/* Registers the calling (non-EAL) thread as an lcore, so that mempools'
 * per-lcore caches serve it. Returns its lcore id, or -1 with rte_errno set
 * (no lcore left: the thread still works, through the pools' rings). */
int cutover_thread_register(void);

/* Returns the calling thread's objects cached for `mp` to the pool, then
 * releases its lcore (rte_thread_unregister does not flush caches). */
void cutover_thread_unregister(struct rte_mempool *mp);

/* Objects in the calling lcore's cache of `mp`; 0 for a thread without an
 * lcore or a pool without caches. */
unsigned cutover_mempool_cached(struct rte_mempool *mp);

/* Configures `port` with `nb_queues` RX/TX queue pairs (RSS over IP, TCP
 * and UDP when nb_queues > 1 and the device offers it), RX queue q filling
 * from pools[q], and starts it. Returns 0, or a negative errno with *step
 * naming the call that failed. */
int cutover_port_setup(uint16_t port, uint16_t nb_queues, uint16_t nb_rxd,
                       uint16_t nb_txd, struct rte_mempool *const *pools,
                       int promiscuous, const char **step);

#endif
