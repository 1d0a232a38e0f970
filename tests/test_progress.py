from mlcheck.progress import Progress


def clock(*times):
    return iter(times).__next__


def test_prints_every_interval_with_failures_and_time_left():
    p = Progress(interval=30, clock=clock(0, 10, 31, 40, 70))
    p.total = 8
    assert p.finished("passed") is None  # t=10: too early
    # t=31: 93 s left
    assert p.finished("failed") == "mlcheck: 2/8 done (25%) · 1 failed · ~1 min 33 s left"
    assert p.finished("error") is None  # t=40
    line = p.finished("error")
    assert line == "mlcheck: 4/8 done (50%) · 1 failed · 2 errors · ~1 min 10 s left"


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
