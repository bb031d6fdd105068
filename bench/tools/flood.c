// SPDX-License-Identifier: GPL-2.0
/*
 * flood: sends small UDP datagrams as fast as one core can, with sendmmsg, for a number of
 * seconds, and prints how many it sent. The sender of itm's end-to-end benchmarks.
 *
 *   flood DST_IPV4 PORT SECONDS [PAYLOAD_BYTES [FLOWS [COUNT]]]
 *
 * PAYLOAD_BYTES defaults to 22 (64-byte Ethernet frames). With FLOWS > 1 it cycles through that
 * many 5-tuples: as many sockets (source ports) as it takes to need no more than 50,000
 * destination ports from PORT on, the same number on each, one socket per sendmmsg batch. COUNT stops it after that many packets (0: none).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH		 64
#define PORTS_PER_SOCKET 50000

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = {.sin_family = AF_INET};
	struct sockaddr_in names[BATCH];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char payload[1500];
	unsigned long long sent = 0, failed = 0, count;
	unsigned int flows, ports, nsock, *cursor, s = 0;
	double secs, start, end, t;
	int *fds, size, port;

	if (argc < 4) {
		fprintf(stderr, "usage: flood DST_IPV4 PORT SECONDS [PAYLOAD_BYTES [FLOWS [COUNT]]]\n");
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "flood: bad address %s\n", argv[1]);
		return 2;
	}
	port = atoi(argv[2]);
	secs = atof(argv[3]);
	size = argc > 4 ? atoi(argv[4]) : 22;
	flows = argc > 5 ? strtoul(argv[5], NULL, 10) : 1;
	count = argc > 6 ? strtoull(argv[6], NULL, 10) : 0;
	if (size < 0 || size > (int)sizeof(payload) || secs <= 0 || flows < 1 || flows > 64000000) {
		fprintf(stderr, "flood: bad payload size, duration or number of flows\n");
		return 2;
	}
	/* as many ports on every socket, so that FLOWS packets cover every flow once */
	nsock = (flows + PORTS_PER_SOCKET - 1) / PORTS_PER_SOCKET;
	ports = (flows + nsock - 1) / nsock;
	if (ports * nsock != flows) {
		fprintf(stderr, "flood: %u flows do not split evenly over %u sockets (use %u)\n", flows,
			nsock, ports * nsock);
		return 2;
	}
	if (port < 1 || port + ports - 1 > 65535) {
		fprintf(stderr, "flood: ports %d to %u do not fit\n", port, port + ports - 1);
		return 2;
	}
	memset(payload, 0x5a, sizeof(payload));
	fds = calloc(nsock, sizeof(*fds));
	cursor = calloc(nsock, sizeof(*cursor));
	if (!fds || !cursor) {
		perror("flood: calloc");
		return 1;
	}
	dst.sin_port = htons(port);
	for (unsigned int i = 0; i < nsock; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		/* one flow: connected, the cheapest send; several: a bound source port, the
		 * destination port in each message */
		if (fds[i] < 0 ||
		    (flows == 1
			     ? connect(fds[i], (struct sockaddr *)&dst, sizeof(dst))
			     : bind(fds[i], (struct sockaddr *)&(struct sockaddr_in){.sin_family = AF_INET},
				    sizeof(dst)))) {
			perror("flood: socket");
			return 1;
		}
	}
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = payload;
		iov[i].iov_len = size;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		names[i] = dst;
		if (flows > 1) {
			msgs[i].msg_hdr.msg_name = &names[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
		}
	}
	start = now();
	end = start + secs;
	do {
		int want = BATCH, n;

		if (count && count - sent < BATCH)
			want = count - sent;
		for (int i = 0; i < want && flows > 1; i++)
			names[i].sin_port = htons(port + (cursor[s] + i) % ports);
		n = sendmmsg(fds[s], msgs, want, 0);
		if (n > 0) {
			sent += n;
			cursor[s] = (cursor[s] + n) % ports;
			s = (s + 1) % nsock;
		} else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED)
			failed++;
		else {
			perror("flood: sendmmsg");
			return 1;
		}
		t = now();
	} while (t < end && (!count || sent < count));
	printf("sent=%llu seconds=%.3f pps=%.0f failed_calls=%llu\n", sent, t - start, sent / (t - start),
	       failed);
	return 0;
}
