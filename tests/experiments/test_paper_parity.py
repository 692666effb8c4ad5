"""--scale paper parity with the released code where it is a setting (issue 12): IMP's last level trains 160
epochs, and rewinding keeps the BatchNorm running statistics; smaller scales keep the earlier settings."""
import torch
from torch import nn

from experiments.e3_imp import EXPERIMENT as E3
from experiments.imp import current_masks, rewind_, snapshot
from experiments.infra.masked import MaskedLinear


def test_imp_paper_configs_carry_the_released_code_settings(tmp_path):
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (tmp_path / name).write_bytes(b"")
    paper = E3.configs("paper", 1, data_dir=str(tmp_path))
    assert {(c["train"]["epochs"], c["final_epochs"], c["rewind_bn_stats"]) for c in paper} == {(150, 160, False)}
    assert all("final_epochs" not in c and "rewind_bn_stats" not in c for c in E3.configs("default", 1))


def test_rewind_keeps_or_restores_batchnorm_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(MaskedLinear(4, 3, 0.5, generator=torch.Generator().manual_seed(0)), nn.BatchNorm1d(3))
    initial = snapshot(model)
    model.train()
    model(torch.randn(16, 4) * 3 + 1)  # moves the running statistics
    moved = model[1].running_mean.clone()
    assert not torch.equal(moved, initial["1.running_mean"])
    rewind_(model, initial, current_masks(model), buffers=False)
    assert torch.equal(model[1].running_mean, moved)  # the released code's IMP: statistics kept
    assert torch.equal(model[0].weight, initial["0.weight"] * model[0].mask)
    rewind_(model, initial, current_masks(model))
    assert torch.equal(model[1].running_mean, initial["1.running_mean"])
