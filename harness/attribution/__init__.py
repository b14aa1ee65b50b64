"""Which patch did it: bisect and ablation over the patches of a series or the commits of a tree."""
