/*
 * memdirty: fill N MiB of anonymous memory with a non-zero pattern, then free it.
 *
 * The freed pages go back to the guest's buddy allocator still holding the pattern: exactly the
 * stale data a wrongly skipped zeroing would hand to the next user.  Prints one JSON line.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

int main(int argc, char **argv)
{
	int thp;
	size_t mib = parse_size_args(argc, argv, &thp);

	if (!mib)
		return 2;

	size_t len = mib << 20;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint64_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(buf, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (size_t i = 0; i < len / 8; i++)
		buf[i] = MEMDIRTY_PATTERN;
	munmap(buf, len);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	printf("{\"mib\": %zu, \"thp\": %s, \"wall_ms\": %.3f}\n", mib, thp ? "true" : "false",
	       (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
	return 0;
}
