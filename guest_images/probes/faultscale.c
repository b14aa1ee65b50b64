/*
 * faultscale: page-fault scalability in the style of will-it-scale's page_fault1 and page_fault2.
 *
 * N workers (processes, or threads with --threads) each loop for a fixed time: map a region, write one
 * byte of every 4 KiB page (one write fault each), unmap it.  An operation is one page faulted, as in
 * will-it-scale.  Every fault allocates a fresh order-0 page and every munmap frees the region again,
 * so the loop is the page allocator's hot path: rmqueue, expand(), post_alloc_hook() on the way in,
 * the pcp lists and __free_one_page() on the way out (a region is far larger than the pcp lists).
 *
 * - anon (page_fault1): a private anonymous mapping; do_anonymous_page() allocates and zeroes the page.
 * - file (page_fault2): a private mapping of a tmpfs file filled beforehand; do_cow_fault() allocates
 *   an anonymous page and copies the page-cache page into it: the same allocation without the zeroing,
 *   so the allocator's own share of a fault is larger.
 *
 * Workers start together (a pipe is the barrier) and each stops after the first whole region past
 * the deadline, so every worker's operations are whole regions faulted within its own measured time.
 *
 * Prints one JSON line: mode, tasks, workers, mib, pages_per_region, seconds, elapsed_ms (the longest
 * worker), ops, ops_per_s (the sum of the workers' own rates), faults (page faults the workers took
 * while looping, from getrusage), worker_ops and worker_faults (per worker), user_ms and sys_ms.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

#define MAX_WORKERS 64

struct options {
	int file, threads, workers;
	double seconds;
	size_t mib;
};

struct worker {
	int index, fd; /* fd: the worker's tmpfs file in file mode */
	long ops, faults;
	double elapsed_ms, user_ms, sys_ms;
	int error; /* an errno, or 0 */
};

static struct options opt;
static struct worker *workers; /* shared with child processes */
static int barrier[2];

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s anon|file WORKERS SECONDS MIB [--threads]\n", prog);
}

static int parse(int argc, char **argv)
{
	int pos = 0;

	memset(&opt, 0, sizeof(opt));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads"))
			opt.threads = 1;
		else if (pos == 0 && (!strcmp(argv[i], "anon") || !strcmp(argv[i], "file")))
			opt.file = !strcmp(argv[i], "file"), pos++;
		else if (pos == 1)
			opt.workers = atoi(argv[i]), pos++;
		else if (pos == 2)
			opt.seconds = atof(argv[i]), pos++;
		else if (pos == 3)
			opt.mib = strtoull(argv[i], NULL, 10), pos++;
		else
			return 0;
	}
	return pos == 4 && opt.workers >= 1 && opt.workers <= MAX_WORKERS && opt.seconds > 0 && opt.mib > 0;
}

/* The worker's own faults: the whole process for a process worker, the thread for a thread worker. */
static void usage_now(struct rusage *r)
{
	getrusage(opt.threads ? RUSAGE_THREAD : RUSAGE_SELF, r);
}

/* A tmpfs file of the region's size, its pages in the page cache before the loop starts. */
static int make_file(size_t len)
{
	char path[] = "/tmp/faultscale-XXXXXX", block[65536];
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	unlink(path);
	memset(block, 0x5a, sizeof(block));
	for (size_t off = 0; off < len; off += sizeof(block))
		if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block))
			return -1;
	return fd;
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	size_t page = sysconf(_SC_PAGESIZE), len = opt.mib << 20;
	struct rusage r0, r1;
	char go;

	w->ops = 0;
	if (read(barrier[0], &go, 1) < 0) { /* returns when the parent closes the write end: all start together */
		w->error = errno;
		return NULL;
	}
	usage_now(&r0);
	double t0 = now_ms(), deadline = t0 + opt.seconds * 1e3, t1 = t0;
	do {
		char *c = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | (opt.file ? 0 : MAP_ANONYMOUS),
			       opt.file ? w->fd : -1, 0);
		if (c == MAP_FAILED) {
			w->error = errno;
			break;
		}
		madvise(c, len, MADV_NOHUGEPAGE); /* 4 KiB faults, whatever the THP setting */
		for (size_t off = 0; off < len; off += page)
			*(volatile char *)(c + off) = 1;
		munmap(c, len);
		w->ops += len / page;
		t1 = now_ms();
	} while (t1 < deadline);
	usage_now(&r1);
	w->elapsed_ms = t1 - t0;
	w->faults = (r1.ru_minflt + r1.ru_majflt) - (r0.ru_minflt + r0.ru_majflt);
	w->user_ms = tv_ms(r1.ru_utime) - tv_ms(r0.ru_utime);
	w->sys_ms = tv_ms(r1.ru_stime) - tv_ms(r0.ru_stime);
	return NULL;
}

static int start_workers(pid_t *pids, pthread_t *tids)
{
	for (int i = 0; i < opt.workers; i++) {
		if (opt.threads) {
			if ((errno = pthread_create(&tids[i], NULL, run_worker, &workers[i])))
				return -1;
			continue;
		}
		pids[i] = fork();
		if (pids[i] < 0)
			return -1;
		if (pids[i] == 0) {
			close(barrier[1]);
			run_worker(&workers[i]);
			_exit(0);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (!parse(argc, argv)) {
		usage(argv[0]);
		return 2;
	}
	size_t len = opt.mib << 20, page = sysconf(_SC_PAGESIZE);
	/* Shared, and written here first, so a worker's result slot is mapped before its fault count starts. */
	workers = mmap(NULL, sizeof(*workers) * opt.workers, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (workers == MAP_FAILED || pipe(barrier)) {
		perror("faultscale: setup");
		return 1;
	}
	for (int i = 0; i < opt.workers; i++) {
		workers[i] = (struct worker){.index = i, .fd = -1};
		if (opt.file && (workers[i].fd = make_file(len)) < 0) {
			perror("faultscale: tmpfs file");
			return 1;
		}
	}
	pid_t pids[MAX_WORKERS];
	pthread_t tids[MAX_WORKERS];
	if (start_workers(pids, tids)) {
		perror("faultscale: starting workers");
		return 1;
	}
	close(barrier[1]);
	for (int i = 0; i < opt.workers; i++) {
		if (opt.threads)
			pthread_join(tids[i], NULL);
		else
			waitpid(pids[i], NULL, 0);
	}

	long ops = 0, faults = 0;
	double rate = 0, elapsed = 0, user = 0, sys = 0;
	char wops[MAX_WORKERS * 24] = "", wfaults[MAX_WORKERS * 24] = "";
	for (int i = 0; i < opt.workers; i++) {
		struct worker *w = &workers[i];
		if (w->error) {
			fprintf(stderr, "faultscale: worker %d: %s\n", i, strerror(w->error));
			return 1;
		}
		ops += w->ops;
		faults += w->faults;
		rate += w->ops / (w->elapsed_ms / 1e3);
		elapsed = w->elapsed_ms > elapsed ? w->elapsed_ms : elapsed;
		user += w->user_ms;
		sys += w->sys_ms;
		snprintf(wops + strlen(wops), sizeof(wops) - strlen(wops), "%s%ld", i ? ", " : "", w->ops);
		snprintf(wfaults + strlen(wfaults), sizeof(wfaults) - strlen(wfaults), "%s%ld", i ? ", " : "", w->faults);
	}
	printf("{\"mode\": \"%s\", \"tasks\": \"%s\", \"workers\": %d, \"mib\": %zu, \"pages_per_region\": %zu, "
	       "\"seconds\": %g, \"elapsed_ms\": %.3f, \"ops\": %ld, \"ops_per_s\": %.1f, \"faults\": %ld, "
	       "\"worker_ops\": [%s], \"worker_faults\": [%s], \"user_ms\": %.3f, \"sys_ms\": %.3f}\n",
	       opt.file ? "file" : "anon", opt.threads ? "threads" : "processes", opt.workers, opt.mib, len / page,
	       opt.seconds, elapsed, ops, rate, faults, wops, wfaults, user, sys);
	return 0;
}
