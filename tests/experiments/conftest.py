"""Shared settings for the experiments tests: one torch CPU thread (on a small or shared CPU, torch's
intra-op threads mostly contend with each other; tiny models run faster single-threaded)."""
import torch

torch.set_num_threads(1)
