from mlcheck.progress import ETA_AFTER, Progress


def clock(*times):
    return iter(times).__next__


def test_prints_every_interval_with_failures_and_time_left():
    p = Progress(interval=30, clock=clock(0, 10, 31, 40, 45, 70, 75))
    p.total = 10
    assert p.finished("passed") is None  # t=10: too early
    assert p.finished("failed") == "mlcheck: 2/10 done (20%) · 1 failed"  # t=31: no estimate yet
    assert p.finished("error") is None  # t=40
    assert p.finished("error") is None  # t=45
    # t=70: 60 s for the 4 tests after the first one, 5 to go
    assert p.finished("passed") == (
        "mlcheck: 5/10 done (50%) · 1 failed · 2 errors · ~1 min 15 s left"
    )
    assert p.finished("passed") is None  # t=75


def test_the_first_estimate_waits_for_a_few_tests_and_leaves_out_the_first():
    # the first test pays for the imports (20 min here); the next ones take 1 s each
    times = [0.0, 1200.0, *(1200.0 + i for i in range(1, 10))]
    p = Progress(interval=0, clock=clock(*times))
    p.total = 2800
    lines = [p.finished("passed") for _ in range(ETA_AFTER)]
    assert all("left" not in line for line in lines[:-1]), lines
    assert lines[-1] == f"mlcheck: {ETA_AFTER}/2,800 done (0%) · ~46 min 35 s left"  # 2,795 x 1 s


def test_negative_interval_never_prints_and_unknown_total_still_counts():
    quiet = Progress(interval=-1, clock=clock(0, 1000))
    assert quiet.finished("failed") is None
    p = Progress(interval=0, clock=clock(0, 5))
    assert p.finished("passed") == "mlcheck: 1 done"


def test_plugin_prints_status_lines_during_the_run(pytester):
    pytester.makepyfile(
        test_p="import pytest\n@pytest.mark.parametrize('i', range(3))\n"
        "def test_x(i):\n    assert i != 1\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--mlcheck-progress=0")
    result.stdout.fnmatch_lines(
        ["mlcheck: 1/3 done (33%)*", "mlcheck: 3/3 done (100%) · 1 failed*"]
    )
    quiet = pytester.runpytest("-p", "no:cacheprovider")  # default: every 30 s
    assert "done (" not in quiet.stdout.str()
