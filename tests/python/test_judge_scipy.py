"""The A/B judge's Mann-Whitney U test equals scipy's: `chaoseater ab judge` against
`scipy.stats.mannwhitneyu(b, a, method="asymptotic", use_continuity=True)` on random sample pairs, ties
and constant samples among them.

Needs CHAOSEATER_BIN (set by .ci/run).
"""

import json
import os
import pathlib
import random
import subprocess

import pytest
from scipy.stats import mannwhitneyu

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("CHAOSEATER_BIN", str(ROOT / "target" / "release" / "chaoseater"))


def pairs():
    rng = random.Random(16)
    out = []
    for i in range(24):
        n_a, n_b = rng.randint(3, 20), rng.randint(3, 20)
        if i % 3 == 0:
            # Integer scores: many ties.
            a = [float(rng.randint(50, 60)) for _ in range(n_a)]
            b = [float(rng.randint(52, 62)) for _ in range(n_b)]
        else:
            shift = rng.choice([0.0, 0.3, 1.0, 2.5])
            a = [rng.gauss(10.0, 2.0) for _ in range(n_a)]
            b = [rng.gauss(10.0 + shift * 2.0, 2.0) for _ in range(n_b)]
        out.append((a, b))
    # Constant samples: the same constant, two constants, one constant side.
    out.append(([3.0] * 5, [3.0] * 6))
    out.append(([1.0] * 4, [2.0] * 4))
    out.append(([1.0, 2.0, 3.0], [3.0, 3.0, 3.0]))
    out.append(([70.5, 70.5, 71.0, 69.0], [70.5, 72.0, 72.0, 73.5, 70.5]))
    return out


def judge(a, b):
    listed = lambda values: ",".join(repr(v) for v in values)
    out = subprocess.run(
        [BIN, "ab", "judge", "--a", listed(a), "--b", listed(b), "--format", "json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("a,b", pairs())
def test_p_value_and_u_equal_scipy(a, b):
    ours = judge(a, b)
    theirs = mannwhitneyu(b, a, method="asymptotic", use_continuity=True, alternative="two-sided")
    assert ours["n_a"] == len(a) and ours["n_b"] == len(b)
    assert ours["samples_a"] == a and ours["samples_b"] == b
    assert abs(ours["u"] - float(theirs.statistic)) < 1e-9
    assert abs(ours["p_value"] - float(theirs.pvalue)) < 1e-9, (ours["p_value"], float(theirs.pvalue))
    assert ours["ci_low"] <= ours["hl_estimate"] <= ours["ci_high"]
    assert ours["label"] in ("BETTER", "WORSE", "NO_DIFFERENCE")


def test_bad_samples_exit_2_naming_the_flag():
    out = subprocess.run([BIN, "ab", "judge", "--a", "1,2,x", "--b", "1,2"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 2 and "--a: value 3" in out.stderr, out.stderr
