/* Shared by the probes: memdirty's fill pattern (memtouch recognises it as stale data), arguments, faults. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

#define MEMDIRTY_PATTERN 0xa5a5b00b1e5a5a5aULL

struct probe_args {
	size_t mib;
	int thp;
	int store; /* memtouch: fault pages in from user space with a plain store (default: MADV_POPULATE_WRITE) */
	int hold; /* memdirty: keep the memory until killed */
};

/* "PROG MIB [--thp] [--store] [--hold]": returns 0 after printing usage when the arguments are bad. */
static inline int parse_probe_args(int argc, char **argv, struct probe_args *a)
{
	memset(a, 0, sizeof(*a));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--thp"))
			a->thp = 1;
		else if (!strcmp(argv[i], "--store"))
			a->store = 1;
		else if (!strcmp(argv[i], "--hold"))
			a->hold = 1;
		else
			a->mib = strtoull(argv[i], NULL, 10);
	}
	if (!a->mib)
		fprintf(stderr, "usage: %s MIB [--thp] [--store] [--hold]\n", argv[0]);
	return a->mib != 0;
}

/* Page faults this process has taken so far (minor + major; GUP faults from madvise count too). */
static inline long process_faults(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return r.ru_minflt + r.ru_majflt;
}

static inline double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline double tv_ms(struct timeval tv)
{
	return tv.tv_sec * 1e3 + tv.tv_usec / 1e3;
}
