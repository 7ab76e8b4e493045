from opensora_kedro.config.merge import deep_merge, flatten


def test_dicts_merge_and_other_values_replace():
    sources = {}
    merged = deep_merge(
        {"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": 2}, "x", sources
    )
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert sources[("a", "c")] == "x" and sources[("e",)] == "x"


def test_delete_marker_replaces_the_dict_wholesale():
    sources = {}
    base = {"bucket": {"256px": {1: 1}, "768px": {1: 2}}}
    base = deep_merge({}, base, "base", sources)
    merged = deep_merge(base, {"bucket": {"_delete_": True, "96px": {1: 3}}}, "local", sources)
    assert merged == {"bucket": {"96px": {1: 3}}}
    assert ("bucket", "768px") not in sources and sources[("bucket", "96px", "1")] == "local"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {
        ("a", "b"): 1,
        ("a", "c"): {},
        ("d",): [1],
    }
