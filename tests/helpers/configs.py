"""What the tests know about configs/ beyond its folder layout."""

# `lit-meta tune` searches: the stack of fit configs (as the README gives it) and the search space,
# checked against the stack by tests/lit_meta/tuning/test_space.py.
TUNE_SEARCHES = {
    "tune/omniglot_fomaml": (
        ["omniglot/base.yaml", "omniglot/fomaml_5w1s.yaml", "tune/omniglot_fomaml.yaml"],
        "tune/fomaml_space.yaml",
    ),
}
