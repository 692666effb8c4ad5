"""construct: weak and strong lottery tickets of ReLU MLPs inside materialized, seeded ER sources, with error
certificates (docs/math.md §4–§6), following Gadhikar et al. 2023. See construct/README.md for the npz format and CLI.

torch is imported only by :mod:`construct.export`, :mod:`construct.modules` and :mod:`construct.masking`, on first
use of ``to_module``, ``to_torch``, ``read_module``, ``er_masks`` or a PyTorch target."""
from construct.architecture import Architecture, Layer
from construct.certificate import Certificate, certify, interval_bounds, sampled_error
from construct.source import Source, sample_source
from construct.strong import build_strong_ticket, plan_strong
from construct.subset_sum import solve_subset_sums
from construct.targets import Target, digits_target, load_target, make_target, random_target, target_forward
from construct.ticket import Ticket, load_ticket, save_ticket, ticket_forward
from construct.verify import verify_ticket
from construct.weak import build_weak_ticket


def __getattr__(name):  # torch-based entry points, imported on first use (importing construct needs no torch)
    if name in ("to_module", "to_torch"):
        from construct import export

        return getattr(export, name)
    if name in ("er_masks", "mask_table"):
        from construct import masking as _er

        return getattr(_er, name)
    if name == "read_module":
        from construct.modules import read_module

        return read_module
    raise AttributeError(f"module 'construct' has no attribute {name!r}")


__all__ = ["solve_subset_sums", "Target", "make_target", "random_target", "load_target", "digits_target",
           "target_forward", "Source", "sample_source", "Ticket", "ticket_forward", "save_ticket", "load_ticket",
           "build_weak_ticket", "build_strong_ticket", "plan_strong", "Certificate", "certify", "interval_bounds",
           "sampled_error", "verify_ticket", "Architecture", "Layer", "read_module", "to_module", "to_torch", "er_masks",
           "mask_table"]
