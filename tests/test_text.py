from mlcheck.text import plural


def test_plural_is_singular_for_one_only():
    assert [plural(n, "model") for n in (0, 1, 2)] == ["0 models", "1 model", "2 models"]
    assert plural(1_200, "file") == "1,200 files"
    assert plural(1, "was", "were") == "1 was" and plural(3, "was", "were") == "3 were"
