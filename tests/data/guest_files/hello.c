/* A user's own static binary for the guest-files tests: prints its name and argument count. */
#include <stdio.h>

int main(int argc, char **argv)
{
	printf("hello from %s with %d argument(s)\n", argv[0], argc - 1);
	return 0;
}
