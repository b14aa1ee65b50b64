/*
 * memtouch: fault in N MiB of fresh anonymous memory and check it reads back as zeroes.
 *
 * Each page is faulted in by a write that does not change its content (an atomic add of 0), so the
 * kernel has to allocate (and normally zero) a real page rather than map the shared zero page, and
 * what the kernel handed out can still be inspected afterwards.  Only the fault loop is timed.
 *
 * Prints one JSON line: mib, pages, thp, wall_ms, user_ms, sys_ms, nonzero_pages, pattern_pages,
 * first_nonzero_page.  pattern_pages counts pages holding memdirty's fill pattern: stale data.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double tv_ms(struct timeval tv)
{
	return tv.tv_sec * 1e3 + tv.tv_usec / 1e3;
}

static int page_is_zero(const uint64_t *p, size_t words)
{
	for (size_t i = 0; i < words; i++)
		if (p[i])
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	int thp;
	size_t mib = parse_size_args(argc, argv, &thp);

	if (!mib)
		return 2;

	size_t page = sysconf(_SC_PAGESIZE), len = mib << 20, pages = len / page;
	/* Over-map by 2 MiB so a THP-aligned start can be chosen. */
	char *raw = mmap(NULL, len + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	char *buf = (char *)(((uintptr_t)raw + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
	if (madvise(buf, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
		perror("madvise");
		return 1;
	}

	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	double t0 = now_ms();
	for (size_t off = 0; off < len; off += page)
		__atomic_fetch_add((uint64_t *)(buf + off), 0, __ATOMIC_RELAXED);
	double t1 = now_ms();
	getrusage(RUSAGE_SELF, &r1);

	size_t nonzero = 0, stale = 0;
	long first = -1;
	for (size_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(buf + i * page);
		if (page_is_zero(p, page / 8))
			continue;
		nonzero++;
		if (p[0] == MEMDIRTY_PATTERN)
			stale++;
		if (first < 0)
			first = (long)i;
	}

	/*
	 * snprintf + write(2), not stdio: on a kernel that hands out stale pages, libc's own lazily
	 * faulted state (stdio locks) may be garbage and printf() or exit() would hang on it.
	 */
	char line[512];
	int n = snprintf(line, sizeof(line),
			 "{\"mib\": %zu, \"pages\": %zu, \"thp\": %s, \"wall_ms\": %.3f, \"user_ms\": %.3f, "
			 "\"sys_ms\": %.3f, \"nonzero_pages\": %zu, \"pattern_pages\": %zu, \"first_nonzero_page\": %ld}\n",
			 mib, pages, thp ? "true" : "false", t1 - t0,
			 tv_ms(r1.ru_utime) - tv_ms(r0.ru_utime), tv_ms(r1.ru_stime) - tv_ms(r0.ru_stime),
			 nonzero, stale, first);
	/* _exit(): exit() would flush stdio under the same possibly garbage locks. */
	_exit(write(1, line, n) == n ? 0 : 1);
}
