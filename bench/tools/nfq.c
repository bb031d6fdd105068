// SPDX-License-Identifier: GPL-2.0
/*
 * nfq: the classic user-space packet path, for comparison with itm's AF_XDP one: a minimal
 * libnetfilter_queue consumer that accepts every packet unchanged, with one verdict per packet
 * (itmBench's ip_queue, the Spines interceptors) or with batched verdicts (one per up to 64
 * packets, and whenever the socket has nothing more to read).
 *
 *   nfq QUEUE SECONDS [single|batch]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define BATCH 64

static struct nfq_q_handle *qh;
static int batched;
static unsigned long long seen;
static unsigned pending;
static __u32 last_id;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void flush(void)
{
	if (pending) {
		nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);
		pending = 0;
	}
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *msg, struct nfq_data *d, void *data)
{
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(d);
	__u32 id = ph ? ntohl(ph->packet_id) : 0;

	(void)msg;
	(void)data;
	seen++;
	if (!batched)
		return nfq_set_verdict(q, id, NF_ACCEPT, 0, NULL);
	last_id = id;
	if (++pending >= BATCH)
		flush();
	return 0;
}

int main(int argc, char **argv)
{
	struct nfq_handle *h;
	char buf[65536] __attribute__((aligned));
	double end;
	int fd, size = 8 << 20;

	if (argc < 3) {
		fprintf(stderr, "usage: nfq QUEUE SECONDS [single|batch]\n");
		return 2;
	}
	batched = argc > 3 && !strcmp(argv[3], "batch");
	h = nfq_open();
	if (!h || nfq_bind_pf(h, AF_INET) < 0) {
		perror("nfq: open");
		return 1;
	}
	qh = nfq_create_queue(h, atoi(argv[1]), on_packet, NULL);
	if (!qh || nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0) {
		perror("nfq: queue");
		return 1;
	}
	nfq_set_queue_maxlen(qh, 4096);
	fd = nfq_fd(h);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	{
		struct timeval tv = {.tv_sec = 0, .tv_usec = 200000}; /* to see the end come */

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	printf("ready\n");
	fflush(stdout);
	end = now() + atof(argv[2]);
	while (now() < end) {
		int n = recv(fd, buf, sizeof(buf), batched && pending ? MSG_DONTWAIT : 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				flush(); /* nothing more to read: the batch goes now */
				continue;
			}
			if (errno == ENOBUFS) /* the kernel dropped messages: go on */
				continue;
			perror("nfq: recv");
			break;
		}
		nfq_handle_packet(h, buf, n);
	}
	flush();
	nfq_destroy_queue(qh);
	nfq_close(h);
	printf("seen=%llu\n", seen);
	return 0;
}
