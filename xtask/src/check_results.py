"""Checks a bench run's junit.xml and kcidb.json with readers sparsekit did
not write: kcidb-io (KernelCI's own schema library) and junitparser.

Usage: python3 check_results.py DIR
DIR holds junit.xml, kcidb.json and counts.json (the bench's totals).
Exits 1 with the reason on the first disagreement.
"""

import copy
import json
import sys

import junitparser
import kcidb_io


def fail(msg):
    print(f"check_results: FAIL: {msg}")
    sys.exit(1)


def kcidb_counts(doc):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    key = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}
    for t in doc.get("tests", []):
        if t.get("status") not in key:
            fail(f"test {t['id']} has status {t.get('status')!r}, not PASS/FAIL/SKIP")
        counts[key[t["status"]]] += 1
    return counts


def check_kcidb(path, expected):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    latest = kcidb_io.schema.LATEST
    version = doc["version"]
    if (version["major"], version.get("minor")) != (latest.major, latest.minor):
        fail(f"{path}: schema {version}, but kcidb-io's newest is v{latest.major}.{latest.minor}")
    # Raises jsonschema.ValidationError (with the path of the offence).
    latest.validate(doc)
    ids = [o["id"] for kind in ("checkouts", "builds", "tests") for o in doc[kind]]
    if len(ids) != len(set(ids)):
        fail(f"{path}: duplicate IDs")
    got = kcidb_counts(doc)
    if got != expected:
        fail(f"{path}: PASS/FAIL/SKIP counts {got}, the bench counted {expected}")

    # The validator must reject what the schema forbids, or passing it
    # proves nothing. Each mutation breaks one rule.
    def broken(mutate):
        bad = copy.deepcopy(doc)
        mutate(bad)
        return bad

    t0 = lambda d: d["tests"][0]  # noqa: E731
    mutations = {
        "status outside the enum": lambda d: t0(d).__setitem__("status", "BROKEN"),
        "missing build_id": lambda d: t0(d).pop("build_id"),
        "path with a slash": lambda d: t0(d).__setitem__("path", "sparsekit/copy"),
        "id without an origin prefix": lambda d: t0(d).__setitem__("id", "no-origin"),
        "number as a string": lambda d: t0(d).__setitem__("number", {"value": "1"}),
        "start_time not a date-time": lambda d: t0(d).__setitem__("start_time", "yesterday"),
        "null property": lambda d: t0(d).__setitem__("comment", None),
        "unknown top-level key": lambda d: d.__setitem__("extra", []),
        "newer major version": lambda d: d["version"].__setitem__("major", latest.major + 1),
    }
    for what, mutate in mutations.items():
        if latest.is_valid(broken(mutate)):
            fail(f"kcidb-io accepted a document with {what}")
    return got, len(mutations)


def check_junit(path, expected):
    xml = junitparser.JUnitXml.fromfile(path)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    for suite in suites:
        props = {p.name: p.value for p in suite.properties()}
        if "KERNEL" not in props or "SECTION" not in props:
            fail(f"{path}: suite {suite.name!r} lacks KERNEL/SECTION properties: {props}")
        for case in suite:
            kinds = {type(r).__name__ for r in case.result}
            if not case.result:
                counts["passed"] += 1
            elif kinds & {"Failure", "Error"}:
                counts["failed"] += 1
            elif kinds == {"Skipped"}:
                counts["skipped"] += 1
            else:
                fail(f"{path}: {case.classname} {case.name}: unexpected results {kinds}")
    if counts != expected:
        fail(f"{path}: junitparser counted {counts}, the bench counted {expected}")
    # The root's totals must agree with the cases (CI reports show them).
    if isinstance(xml, junitparser.JUnitXml):
        xml.update_statistics()
    return counts


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    with open(f"{d}/counts.json", encoding="utf-8") as f:
        expected = json.load(f)
    got, rejected = check_kcidb(f"{d}/kcidb.json", expected)
    print(
        f"check_results: {d}/kcidb.json valid for KCIDB "
        f"v{kcidb_io.schema.LATEST.major}.{kcidb_io.schema.LATEST.minor} (kcidb-io), "
        f"{rejected} broken variants rejected; counts {got}"
    )
    got = check_junit(f"{d}/junit.xml", expected)
    print(f"check_results: {d}/junit.xml parsed by junitparser {junitparser.version}: counts {got}")


if __name__ == "__main__":
    main()
