// SPDX-License-Identifier: GPL-2.0
/*
 * xsk_floor: the least a user-space module's host can do, in C, on the same path as itmd's
 * TypeScript host: it takes over a loaded user module's slot (its AF_XDP socket on the far end of
 * the module's veth pair, its deadline), and sends every packet straight back unchanged. What it
 * sustains is the floor of the AF_XDP design, against which the TypeScript host is measured.
 *
 *   xsk_floor IFNAME HOOK_PIN_DIR SLOT_ID SECONDS [front]
 *
 * IFNAME is the pair's far end (itm<ifindex><x|i|e><id>b); HOOK_PIN_DIR the hook's pin directory
 * (it holds itm_uctl, itm_uflight and mod-<id>/xsks); `front`: the trailer comes in front of the
 * packet (the xdp hook) and goes back behind it. The module's own host must not be running.
 */
#include <errno.h>
#include <linux/if_xdp.h>
#include <linux/types.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <xdp/xsk.h>
#include "itm/abi.h"

#define FRAMES	   4096
#define FRAME_SIZE 4096
#define RING	   2048
#define BATCH	   256

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static __u64 mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int open_pin(const char *dir, const char *name)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		fprintf(stderr, "xsk_floor: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_umem_config ucfg = {
		.fill_size = RING, .comp_size = RING, .frame_size = FRAME_SIZE, .frame_headroom = 0};
	struct xsk_socket_config cfg = {.rx_size = RING,
					.tx_size = RING,
					.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
					.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP};
	__u64 free_frames[FRAMES];
	unsigned n_free = 0;
	unsigned long long received = 0;
	struct itm_uctl uc;
	struct itm_uflight fl;
	char xsks_name[64];
	__u32 id, zero = 0;
	int front, uctl_fd, uflight_fd, xsks_fd, fd, ret;
	double secs;
	__u64 end, renewed = 0;
	void *mem;

	if (argc < 5) {
		fprintf(stderr, "usage: xsk_floor IFNAME HOOK_PIN_DIR SLOT_ID SECONDS [front]\n");
		return 2;
	}
	id = atoi(argv[3]);
	secs = atof(argv[4]);
	front = argc > 5 && !strcmp(argv[5], "front");
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	uctl_fd = open_pin(argv[2], "itm_uctl");
	uflight_fd = open_pin(argv[2], "itm_uflight");
	snprintf(xsks_name, sizeof(xsks_name), "mod-%u/xsks", id);
	xsks_fd = open_pin(argv[2], xsks_name);

	mem = mmap(NULL, (size_t)FRAMES * FRAME_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		   0);
	if (mem == MAP_FAILED) {
		perror("xsk_floor: mmap");
		return 1;
	}
	ret = xsk_umem__create(&umem, mem, (__u64)FRAMES * FRAME_SIZE, &fill, &comp, &ucfg);
	if (ret) {
		fprintf(stderr, "xsk_floor: xsk_umem__create: %s\n", strerror(-ret));
		return 1;
	}
	/* the module's host may still be letting go of the queue */
	for (int i = 0;
	     (ret = xsk_socket__create(&xsk, argv[1], 0, umem, &rx, &tx, &cfg)) == -EBUSY && i < 40; i++)
		usleep(50000);
	if (ret) {
		fprintf(stderr, "xsk_floor: xsk_socket__create on %s: %s\n", argv[1], strerror(-ret));
		return 1;
	}
	fd = xsk_socket__fd(xsk);
	/* every frame is free at first; the loop keeps the fill ring topped up from them */
	for (unsigned i = 0; i < FRAMES; i++)
		free_frames[n_free++] = (__u64)i * FRAME_SIZE;
	/* what an earlier host left in flight is written off, as itmd's host does */
	if (bpf_map_lookup_elem(uctl_fd, &id, &uc) || bpf_map_lookup_elem(uflight_fd, &id, &fl)) {
		perror("xsk_floor: slot");
		return 1;
	}
	uc.gone = fl.sent - fl.back;
	if (bpf_map_update_elem(xsks_fd, &zero, &fd, 0)) {
		perror("xsk_floor: xsks");
		return 1;
	}
	end = mono_ns() + (__u64)(secs * 1e9);
	while (!stop) {
		__u32 idx_rx, idx_tx, idx, n, done;
		__u64 t = mono_ns();

		if (t > end)
			break;
		if (t - renewed > 100000000ull) {
			uc.deadline_ns = t + 500000000ull;
			bpf_map_update_elem(uctl_fd, &id, &uc, 0);
			renewed = t;
		}
		/* frames the kernel has sent go back to the fill ring */
		done = xsk_ring_cons__peek(&comp, BATCH, &idx);
		for (__u32 i = 0; i < done; i++)
			free_frames[n_free++] = *xsk_ring_cons__comp_addr(&comp, idx + i);
		if (done)
			xsk_ring_cons__release(&comp, done);
		if (n_free) {
			__u32 k = xsk_prod_nb_free(&fill, n_free);

			if (k > n_free)
				k = n_free;
			if (k && xsk_ring_prod__reserve(&fill, k, &idx) == k) {
				for (__u32 i = 0; i < k; i++)
					*xsk_ring_prod__fill_addr(&fill, idx + i) = free_frames[--n_free];
				xsk_ring_prod__submit(&fill, k);
			}
		}
		n = xsk_ring_cons__peek(&rx, BATCH, &idx_rx);
		if (!n) {
			/* busy polling: the floor never sleeps (the TypeScript host waits in poll) */
			if (xsk_ring_prod__needs_wakeup(&tx))
				sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
			continue;
		}
		while (xsk_ring_prod__reserve(&tx, n, &idx_tx) != n)
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		for (__u32 i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, idx_rx + i);
			struct xdp_desc *o = xsk_ring_prod__tx_desc(&tx, idx_tx + i);
			__u32 len = d->len;

			if (front) {
				char *p = xsk_umem__get_data(mem, d->addr);

				memcpy(p + len, p - sizeof(struct itm_trailer), sizeof(struct itm_trailer));
				len += sizeof(struct itm_trailer);
			}
			o->addr = d->addr;
			o->len = len;
		}
		xsk_ring_prod__submit(&tx, n);
		xsk_ring_cons__release(&rx, n);
		received += n;
		/* copy mode sends only inside sendto(), up to 32 frames a call: kick until the ring
		 * is empty */
		for (int budget = RING / 32 + 8; budget > 0 && *tx.consumer != *tx.producer; budget--)
			if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN &&
			    errno != EBUSY && errno != EINTR)
				break;
	}
	/* bypassed from now on; the socket leaves the map */
	uc.deadline_ns = 0;
	bpf_map_update_elem(uctl_fd, &id, &uc, 0);
	bpf_map_delete_elem(xsks_fd, &zero);
	usleep(100000);
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	printf("received=%llu\n", received);
	return 0;
}
