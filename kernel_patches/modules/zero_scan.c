// SPDX-License-Identifier: GPL-2.0
/*
 * zero_scan - check that the kernel's own __GFP_ZERO allocations are zero
 *
 * memtouch checks the pages userspace faults in; a kernel allocation takes
 * the same zeroing shortcuts (seed 002: an order-9 __GFP_ZERO allocation of
 * a whole reported block skips zeroing all its pages).  On load this module
 * allocates __GFP_ZERO blocks of every order from 0 to max_order, one of
 * each in turn, until an order fails or free memory falls to reserve_mib,
 * reads every byte of every 4 KiB page, frees everything, and prints
 *
 *   zero_scan: order=O blocks=B nonzero=N          (one line per order)
 *   zero_scan: pages=P nonzero=N pattern=S first=F head=H
 *
 * where pattern counts non-zero pages that start with memdirty's fill
 * pattern (stale user data), first is the index of the first non-zero page
 * in scan order (-1: none) and head its first 16 bytes.  It returns 0, so
 * it stays loaded until rmmod.
 *
 * Only exported symbols are used, so it builds out of tree against every
 * kernel the harness builds.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/list.h>
#include <linux/string.h>
#include <linux/vmstat.h>
#include <linux/sched.h>

#define MEMDIRTY_PATTERN 0xa5a5b00b1e5a5a5aULL	/* guest_images/probes/probe.h */

static unsigned int reserve_mib = 64;
module_param(reserve_mib, uint, 0444);
MODULE_PARM_DESC(reserve_mib, "Stop allocating when free memory falls to this many MiB (default 64)");

static unsigned int max_order = MAX_PAGE_ORDER;
module_param(max_order, uint, 0444);
MODULE_PARM_DESC(max_order, "Highest allocation order (default MAX_PAGE_ORDER)");

static bool movable = true;
module_param(movable, bool, 0444);
MODULE_PARM_DESC(movable, "Allocate movable pages, from the free lists user memory returns to (default 1)");

struct order_stats {
	unsigned long blocks;
	unsigned long nonzero;
};

static int __init zero_scan_init(void)
{
	unsigned long reserve = (unsigned long)reserve_mib << (20 - PAGE_SHIFT);
	gfp_t gfp = (movable ? GFP_HIGHUSER_MOVABLE : GFP_KERNEL) |
		    __GFP_ZERO | __GFP_NORETRY | __GFP_NOWARN;
	struct order_stats stats[MAX_PAGE_ORDER + 1] = {};
	unsigned long pages = 0, nonzero = 0, pattern = 0;
	unsigned long live = 0;		/* bitmap of orders still allocating */
	u64 head[2] = {};
	long first = -1;
	LIST_HEAD(held);
	struct page *page, *next;
	unsigned int order;

	if (max_order > MAX_PAGE_ORDER) {
		pr_err("zero_scan: max_order %u exceeds MAX_PAGE_ORDER %u\n", max_order, MAX_PAGE_ORDER);
		return -EINVAL;
	}
	live = (2UL << max_order) - 1;

	while (live && global_zone_page_state(NR_FREE_PAGES) > reserve) {
		for (order = 0; order <= max_order; order++) {
			unsigned long i;

			if (!(live & (1UL << order)))
				continue;
			page = alloc_pages(gfp, order);
			if (!page) {
				live &= ~(1UL << order);
				continue;
			}
			set_page_private(page, order);
			list_add(&page->lru, &held);
			stats[order].blocks++;
			for (i = 0; i < (1UL << order); i++) {
				const u64 *p = page_address(page + i);

				if (!memchr_inv(p, 0, PAGE_SIZE)) {
					pages++;
					continue;
				}
				if (first < 0) {
					first = pages;
					head[0] = p[0];
					head[1] = p[1];
				}
				if (p[0] == MEMDIRTY_PATTERN)
					pattern++;
				stats[order].nonzero++;
				nonzero++;
				pages++;
			}
			if (global_zone_page_state(NR_FREE_PAGES) <= reserve)
				break;
		}
		cond_resched();
	}

	list_for_each_entry_safe(page, next, &held, lru) {
		list_del(&page->lru);
		order = page_private(page);
		set_page_private(page, 0);
		__free_pages(page, order);
	}

	for (order = 0; order <= max_order; order++)
		pr_info("zero_scan: order=%u blocks=%lu nonzero=%lu\n",
			order, stats[order].blocks, stats[order].nonzero);
	pr_info("zero_scan: pages=%lu nonzero=%lu pattern=%lu first=%ld head=%016llx%016llx\n",
		pages, nonzero, pattern, first, head[0], head[1]);
	return 0;
}

static void __exit zero_scan_exit(void)
{
}

module_init(zero_scan_init);
module_exit(zero_scan_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Allocate __GFP_ZERO pages of every order and report any that are not zero");
