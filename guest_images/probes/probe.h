/* Shared by the probes: memdirty's fill pattern (memtouch recognises it as stale data) and arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMDIRTY_PATTERN 0xa5a5b00b1e5a5a5aULL

/* "PROG MIB [--thp]": returns the size in MiB (0 after printing usage) and sets *thp. */
static inline size_t parse_size_args(int argc, char **argv, int *thp)
{
	size_t mib = 0;

	*thp = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--thp"))
			*thp = 1;
		else
			mib = strtoull(argv[i], NULL, 10);
	}
	if (!mib)
		fprintf(stderr, "usage: %s MIB [--thp]\n", argv[0]);
	return mib;
}
