"""What the tests know about configs/ beyond its folder layout."""

# `lit-meta tune` searches: the stack of fit configs (as the README gives it) and the search space,
# checked against the stack by tests/lit_meta/tuning/test_space.py.
TUNE_SEARCHES = {
    "tune/omniglot_fomaml": (
        ["omniglot/base.yaml", "omniglot/fomaml_5w1s.yaml", "tune/omniglot_fomaml.yaml"],
        "tune/fomaml_space.yaml",
    ),
}

# Meta knowledge distillation: the student's model file stacked on its teacher's config (trainer and
# episodes). Each needs a teacher checkpoint: tests/lit_meta/test_cli.py trains one step of the teacher.
DISTILL_STACKS = {
    "omniglot/distill_protonet_5w1s": [
        "omniglot/base.yaml",
        "omniglot/protonet_5w1s.yaml",
        "omniglot/distill/protonet.yaml",
    ],
    "omniglot/distill_protonet_20w1s": [
        "omniglot/base.yaml",
        "omniglot/protonet_20w1s.yaml",
        "omniglot/distill/protonet.yaml",
    ],
    "omniglot/distill_protonet_20w1s_map16_hint": [
        "omniglot/base.yaml",
        "omniglot/protonet_20w1s.yaml",
        "omniglot/distill/protonet.yaml",
        "omniglot/distill/protonet_map16_hint.yaml",
    ],
    "omniglot/distill_maml_5w1s": ["omniglot/base.yaml", "omniglot/maml_5w1s.yaml", "omniglot/distill/maml.yaml"],
}

# Add-ons stacked on another experiment's files (MAML++ on MAML's config), not run on their own.
STACKED = {
    "sinusoid_maml_plus_plus": ["sinusoid_maml.yaml", "sinusoid_maml_plus_plus.yaml"],
    "omniglot/maml_plus_plus_5w1s": [
        "omniglot/base.yaml",
        "omniglot/maml_5w1s.yaml",
        "omniglot/maml_plus_plus_5w1s.yaml",
    ],
    "omniglot/protonet_20w1s_within_alphabet": [
        "omniglot/base.yaml",
        "omniglot/protonet_20w1s.yaml",
        "omniglot/within_alphabet.yaml",
    ],
}
