"""The hyperparameter search shared by the operator and `tuneloop-train --config`.

`space`: search-space entries as Optuna distributions, and a trial's spec from its params.
`study`: an ask-and-tell study persisted as plain records and rebuilt from them.
Torch-free: the operator image imports it.
"""
