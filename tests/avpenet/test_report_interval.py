"""The report's interval line names the subjects it was measured on: `--part val` reports the validation
subjects, and the line said "coverage on test clips" all the same."""

from __future__ import annotations

from avpenet import report

FILES = {"robustness": "robustness.png"}


def _line(**result) -> str:
    r = {"robustness": {}, "interval_coverage_90": 0.9, "interval_mean_width": 4.0, **result}
    (line,) = [x for x in report._robustness_section(r, FILES) if x.startswith("90% interval coverage")]
    return line


def test_the_interval_line_names_the_part_it_was_measured_on():
    assert _line(part="val").startswith("90% interval coverage on val clips: 90.0%")
    assert _line(part="test").startswith("90% interval coverage on test clips: 90.0%")
    assert _line().startswith("90% interval coverage on test clips")  # a JSON from before `part`
