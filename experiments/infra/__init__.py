"""Infrastructure of the experiments: results store, sweep runner, registry, engines, progress, devices, masked
layers, batched ensembles, data sets and figure helpers. The experiment modules live one level up."""
