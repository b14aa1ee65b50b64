/*
 * memtouch: fault in N MiB of fresh anonymous memory and check it reads back as zeroes.
 *
 * Every page (or THP) must be faulted in by exactly one *write* fault, so the kernel allocates (and
 * normally zeroes) a real page in do_anonymous_page() or do_huge_pmd_anonymous_page(), on any
 * accelerator.  Two ways to do it, and what the kernel handed out can still be inspected afterwards:
 *
 * - default: madvise(MADV_POPULATE_WRITE) (Linux 5.14+) write-faults the range from the kernel
 *   without touching page contents; the madvise call is what is timed.
 * - --store: a plain one-byte store of 0 to the last byte of each page, from user space, which adds
 *   the exception entry per fault.  That byte cannot be checked afterwards (unchecked_bytes_per_page).
 *
 * Not a locked read-modify-write: under TCG it takes a read fault first (zero page), then a
 * copy-on-write fault, which is another kernel path, and in a THP range it never allocates a THP.
 *
 * Prints one JSON line: mib, pages, thp, mode, faults (page faults taken while faulting in),
 * wall_ms, user_ms, sys_ms, nonzero_pages, pattern_pages, first_nonzero_page,
 * unchecked_bytes_per_page, samples.  pattern_pages counts pages holding memdirty's fill pattern: stale
 * data; samples gives the index and first 16 bytes (hex) of the first few non-zero pages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

#define SAMPLES 4 /* non-zero pages whose head is reported */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int page_is_zero(const uint64_t *p, size_t words)
{
	for (size_t i = 0; i < words; i++)
		if (p[i])
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	struct probe_args a;

	if (!parse_probe_args(argc, argv, &a))
		return 2;

	size_t page = sysconf(_SC_PAGESIZE), len = a.mib << 20, pages = len / page;
	/* Over-map by 2 MiB so a THP-aligned start can be chosen. */
	char *raw = mmap(NULL, len + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	char *buf = (char *)(((uintptr_t)raw + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
	if (madvise(buf, len, a.thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
		perror("madvise");
		return 1;
	}

	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	long f0 = process_faults();
	double t0 = now_ms();
	if (a.store) {
		for (size_t off = 0; off < len; off += page)
			*(volatile uint8_t *)(buf + off + page - 1) = 0;
	} else if (madvise(buf, len, MADV_POPULATE_WRITE)) {
		fprintf(stderr, "memtouch: madvise(MADV_POPULATE_WRITE): %s%s\n", strerror(errno),
			errno == EINVAL ? " (needs Linux 5.14 or later; use --store)" : "");
		return 1;
	}
	double t1 = now_ms();
	long faults = process_faults() - f0;
	getrusage(RUSAGE_SELF, &r1);

	size_t nonzero = 0, stale = 0;
	long first = -1;
	/* What the first few non-zero pages held: their index and first 16 bytes, for the bundle. */
	char samples[SAMPLES * 64] = "", *sp = samples;
	for (size_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(buf + i * page);
		if (page_is_zero(p, page / 8))
			continue;
		if (nonzero < SAMPLES)
			sp += snprintf(sp, samples + sizeof(samples) - sp, "%s{\"page\": %zu, \"head\": \"%016llx%016llx\"}",
				       nonzero ? ", " : "", i, (unsigned long long)p[0], (unsigned long long)p[1]);
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
	char line[640 + sizeof(samples)];
	int n = snprintf(line, sizeof(line),
			 "{\"mib\": %zu, \"pages\": %zu, \"thp\": %s, \"mode\": \"%s\", \"faults\": %ld, "
			 "\"wall_ms\": %.3f, \"user_ms\": %.3f, \"sys_ms\": %.3f, \"nonzero_pages\": %zu, "
			 "\"pattern_pages\": %zu, \"first_nonzero_page\": %ld, \"unchecked_bytes_per_page\": %d, "
			 "\"samples\": [%s]}\n",
			 a.mib, pages, a.thp ? "true" : "false", a.store ? "store" : "populate", faults, t1 - t0,
			 tv_ms(r1.ru_utime) - tv_ms(r0.ru_utime), tv_ms(r1.ru_stime) - tv_ms(r0.ru_stime),
			 nonzero, stale, first, a.store ? 1 : 0, samples);
	/* _exit(): exit() would flush stdio under the same possibly garbage locks. */
	_exit(write(1, line, n) == n ? 0 : 1);
}
