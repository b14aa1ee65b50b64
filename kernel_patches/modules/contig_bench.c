// SPDX-License-Identifier: GPL-2.0
/*
 * contig_bench - microbenchmark for free_contig_range()
 *
 * Reproduces the benchmark from "[PATCH v3 1/3] mm/page_alloc: Optimize
 * free_contig_range()" (Ryan Roberts, Muhammad Usama Anjum): repeatedly
 * allocate a high-order block, split it into order-0 pages with
 * split_page() and free them with free_contig_range().  On load it runs
 * the loop, prints exactly one line
 *
 *   contig_bench: iterations=N order=O elapsed_us=U
 *
 * and returns 0, so the module stays loaded until it is removed with rmmod.
 * If an allocation fails it prints the same line for the iterations done so
 * far, followed by "failed=1", and returns -ENOMEM.
 *
 * Only exported symbols are used (alloc_pages, split_page,
 * free_contig_range), so it builds out of tree against both the base and the
 * patched kernel.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/ktime.h>
#include <linux/sched.h>

static unsigned int iterations = 2000;
module_param(iterations, uint, 0444);
MODULE_PARM_DESC(iterations, "Number of alloc + split + free iterations (default 2000)");

static unsigned int order = 9;
module_param(order, uint, 0444);
MODULE_PARM_DESC(order, "Allocation order (default 9)");

static int __init contig_bench_init(void)
{
	unsigned long nr_pages;
	unsigned int i;
	ktime_t start;
	s64 elapsed_us;
	bool failed = false;

	if (order > MAX_PAGE_ORDER) {
		pr_err("contig_bench: order %u exceeds MAX_PAGE_ORDER %u\n",
		       order, MAX_PAGE_ORDER);
		return -EINVAL;
	}
	nr_pages = 1UL << order;

	start = ktime_get();
	for (i = 0; i < iterations; i++) {
		struct page *page = alloc_pages(GFP_KERNEL, order);

		if (!page) {
			failed = true;
			break;
		}
		if (order)
			split_page(page, order);
		free_contig_range(page_to_pfn(page), nr_pages);
		cond_resched();
	}
	elapsed_us = ktime_us_delta(ktime_get(), start);

	if (failed) {
		pr_info("contig_bench: iterations=%u order=%u elapsed_us=%lld failed=1\n",
			i, order, elapsed_us);
		return -ENOMEM;
	}

	pr_info("contig_bench: iterations=%u order=%u elapsed_us=%lld\n",
		iterations, order, elapsed_us);
	return 0;
}

static void __exit contig_bench_exit(void)
{
}

module_init(contig_bench_init);
module_exit(contig_bench_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("free_contig_range() microbenchmark (alloc + split_page + free_contig_range)");
