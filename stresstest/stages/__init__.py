"""One module per stage script, named as its script (train.py -> stages/train.py). A stage imports the library
(stresstest.core, .data, .nn, .metrics, .training, .explain, .label_issues, .probe, .plots), never another stage."""
