/*
 * memdirty: fill N MiB of anonymous memory with a non-zero pattern, then free it.
 *
 * The freed pages go back to the guest's buddy allocator still holding the pattern: exactly the
 * stale data a wrongly skipped zeroing would hand to the next user.  Plain 8-byte stores fault each
 * page (or THP) in with one write fault on any accelerator.  Prints one JSON line, with the page
 * faults the fill took so the harness can check it faulted what it claims.
 *
 * --hold: print the line, then keep the memory until killed, so the pages are freed at a chosen moment
 * (`kill $(pidof memdirty)`): after a migration has switched to postcopy, for example.
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
	struct probe_args a;

	if (!parse_probe_args(argc, argv, &a))
		return 2;

	size_t len = a.mib << 20, page = sysconf(_SC_PAGESIZE);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Over-map by 2 MiB so a THP-aligned start can be chosen. */
	char *raw = mmap(NULL, len + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	uint64_t *buf = (uint64_t *)(((uintptr_t)raw + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
	if (madvise(buf, len, a.thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
		perror("madvise");
		return 1;
	}
	long f0 = process_faults();
	for (size_t i = 0; i < len / 8; i++)
		buf[i] = MEMDIRTY_PATTERN;
	long faults = process_faults() - f0;
	if (!a.hold)
		munmap(raw, len + (2 << 20));
	clock_gettime(CLOCK_MONOTONIC, &t1);

	printf("{\"mib\": %zu, \"pages\": %zu, \"thp\": %s, \"mode\": \"store\", \"faults\": %ld, \"wall_ms\": %.3f}\n",
	       a.mib, len / page, a.thp ? "true" : "false", faults,
	       (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
	if (a.hold) {
		fflush(stdout);
		for (;;)
			pause(); /* freed when a signal kills us */
	}
	return 0;
}
