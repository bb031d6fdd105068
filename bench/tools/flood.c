// SPDX-License-Identifier: GPL-2.0
/*
 * flood: sends small UDP datagrams as fast as one core can, with sendmmsg, for a number of
 * seconds, and prints how many it sent. The sender of itm's end-to-end benchmarks.
 *
 *   flood DST_IPV4 PORT SECONDS [PAYLOAD_BYTES]     (default payload 22: 64-byte Ethernet frames)
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

#define BATCH 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char payload[1500];
	unsigned long long sent = 0, failed = 0;
	double secs, start, end, t;
	int fd, size;

	if (argc < 4) {
		fprintf(stderr, "usage: flood DST_IPV4 PORT SECONDS [PAYLOAD_BYTES]\n");
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "flood: bad address %s\n", argv[1]);
		return 2;
	}
	dst.sin_port = htons(atoi(argv[2]));
	secs = atof(argv[3]);
	size = argc > 4 ? atoi(argv[4]) : 22;
	if (size < 0 || size > (int)sizeof(payload) || secs <= 0) {
		fprintf(stderr, "flood: bad payload size or duration\n");
		return 2;
	}
	memset(payload, 0x5a, sizeof(payload));
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst))) {
		perror("flood: socket");
		return 1;
	}
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = payload;
		iov[i].iov_len = size;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	start = now();
	end = start + secs;
	do {
		int n = sendmmsg(fd, msgs, BATCH, 0);

		if (n > 0)
			sent += n;
		else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED)
			failed++;
		else {
			perror("flood: sendmmsg");
			return 1;
		}
		t = now();
	} while (t < end);
	printf("sent=%llu seconds=%.3f pps=%.0f failed_calls=%llu\n", sent, t - start, sent / (t - start), failed);
	return 0;
}
