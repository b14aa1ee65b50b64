"""The TAP (kselftest) parser, on output the mm selftests printed in a real guest (tests/data/kselftest)."""

from __future__ import annotations

from pathlib import Path

from harness.guest.kselftest import EXIT_CASE, FAIL, PASS, SKIP, parse_tap

DATA = Path(__file__).resolve().parent.parent / "data" / "kselftest"


def results(cases):
    return [(c.case, c.result, c.reason) for c in cases]


def test_harness_style_output_gives_one_case_per_result_line():
    cases = parse_tap("mdwe_test", (DATA / "mdwe_test.log").read_text(), 0)
    assert len(cases) == 36
    assert cases[0].case == "global.prctl_flags" and cases[0].result == PASS
    assert "RUN           global.prctl_flags" in cases[0].log
    skipped = [c for c in cases if c.result == SKIP]
    assert len(skipped) == 4 and all(c.reason for c in skipped)
    assert sum(c.result == PASS for c in cases) == 32


def test_a_skipped_plan_is_one_skipped_case_with_its_reason():
    cases = parse_tap("soft-dirty", (DATA / "soft-dirty.log").read_text(), 4)
    assert results(cases) == [("soft-dirty", SKIP, "soft-dirty is not support")]


def test_bail_out_before_any_result_fails_with_the_reason():
    (case,) = parse_tap("hugepage-mmap", (DATA / "hugepage-mmap.log").read_text(), 1)
    assert case.result == FAIL and "Cannot allocate memory" in case.reason


def test_directives_and_numbering():
    out = "\n".join([
        "TAP version 13", "1..5",
        "ok 1 first", "# about to fail", "not ok 2 second", "ok 3 third # SKIP no hugetlb pages",
        "not ok 4 fourth # TODO later", "ok 5 fifth # XFAIL known",
    ])
    assert results(parse_tap("t", out, 1)) == [
        ("first", PASS, ""), ("second", FAIL, "about to fail"), ("third", SKIP, "no hugetlb pages"),
        ("fourth", SKIP, "later"), ("fifth", PASS, ""),
    ]


def test_a_crash_before_the_plan_is_complete_is_a_failing_case():
    cases = parse_tap("t", "TAP version 13\n1..3\nok 1 a\nSegmentation fault\n", 139)
    assert results(cases)[-1] == (EXIT_CASE, FAIL, "exit status 139 after 1 of 3 planned cases")


def test_a_timeout_is_a_failing_case_and_duplicate_names_are_kept_apart():
    cases = parse_tap("t", "ok 1 same\nok 2 same\n", None)
    assert results(cases) == [("same", PASS, ""), ("same [2]", PASS, ""), (EXIT_CASE, FAIL, "timed out (killed)")]


def test_no_tap_at_all_is_judged_by_the_exit_status():
    assert results(parse_tap("t", "hello\n", 0)) == [("t", PASS, "")]
    assert results(parse_tap("t", "no hugetlb\n", 4)) == [("t", SKIP, "no hugetlb")]
    assert results(parse_tap("t", "boom\n", 2)) == [("t", FAIL, "exit status 2: boom")]
    assert results(parse_tap("t", "ok 1 a\n", 1))[-1] == (EXIT_CASE, FAIL, "exit status 1 although no case failed")


def test_a_skip_exit_part_way_through_the_plan_is_a_skip():
    out = 'TAP version 13\n1..9\nok 2 # SKIP open("/sys/kernel/mm/ksm/run") failed\n# Planned tests != run tests (9 != 1)\n'
    cases = parse_tap("ksm_functional_tests", out, 4)
    assert [c.result for c in cases] == [SKIP, SKIP]
    assert cases[-1].reason == 'open("/sys/kernel/mm/ksm/run") failed'


def test_a_bail_out_part_way_names_the_reason():
    out = "TAP version 13\n1..9\nok 1 a\nok 2 b\nBail out! Error:1: mmap() succeeded when it shouldn't have\n"
    assert parse_tap("map_fixed_noreplace", out, 1)[-1].reason == (
        "exit status 1 after 2 of 9 planned cases: Bail out! Error:1: mmap() succeeded when it shouldn't have")
