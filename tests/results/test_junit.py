"""harness.junit.write_junit: one testcase per expectation plus a "run" testcase per bundle."""

import xml.etree.ElementTree as ET

import bundle_synth as synth

from harness.results.junit import write_junit


def cases(root):
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def test_complete_and_failed_bundles(tmp_path):
    ok = synth.write_bundle(tmp_path / "ok", {"stock": {("fault_in_ms", "touch"): [1.0]}}, expectations=[
        {"name": "balloon_reached", "kernel": "stock", "ok": True, "detail": "reached 1024 MiB"},
        {"name": "nonzero_pages", "kernel": "stock", "ok": False, "detail": "12 non-zero pages\nfirst at pfn 0x1234"},
    ])
    bad = synth.write_bundle(tmp_path / "bad", {}, kernels=("base", "base+reporting"), scenario="reporting",
                             status="failed", error="SSH never came up after 120 s", expectations=[
                                 {"name": "rss_fell_after_reporting", "kernel": "base+reporting", "ok": True,
                                  "detail": ""}])
    out = tmp_path / "junit" / "results.xml"
    write_junit(out, [ok, bad])

    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("5", "2")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"ok", "bad"}
    assert (suites["ok"].get("tests"), suites["ok"].get("failures")) == ("3", "1")

    c = cases(root)
    assert c[("smoke", "run")].find("failure") is None
    assert c[("smoke.stock", "balloon_reached")].find("failure") is None
    failure = c[("smoke.stock", "nonzero_pages")].find("failure")
    assert failure.get("message") == "12 non-zero pages" and "pfn 0x1234" in failure.text
    run_failure = c[("reporting", "run")].find("failure")
    assert run_failure is not None and run_failure.text == "SSH never came up after 120 s"
    assert c[("reporting.base+reporting", "rss_fell_after_reporting")].find("failure") is None


def test_unreadable_bundle_and_extra_failures(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    out = tmp_path / "j.xml"
    write_junit(out, [junk], extra_failures=[("entry 1 (deflate.yaml)", "scenario file not found")])
    root = ET.parse(out).getroot()
    assert root.get("failures") == "2"
    texts = [f.text for f in root.iter("failure")]
    assert any("no manifest.json" in t for t in texts) and "scenario file not found" in texts


def test_no_bundles(tmp_path):
    out = tmp_path / "empty.xml"
    write_junit(out, [])
    root = ET.parse(out).getroot()
    assert root.get("tests") == "0" and root.findall("testsuite") == []
