"""construct: weak and strong lottery tickets of ReLU MLPs inside materialized, seeded ER sources, with error
certificates (MATH.md §4–§6), following Gadhikar et al. 2023. See construct/README.md for the npz format and CLI.

torch is imported only by :mod:`construct.export` (and when loading a torch state_dict target)."""
from construct.certificate import Certificate, certify, interval_bounds, sampled_error
from construct.source import Source, sample_source
from construct.strong import build_strong_ticket, plan_strong
from construct.subset_sum import solve_subset_sums
from construct.targets import Target, digits_target, load_target, make_target, random_target, target_forward
from construct.ticket import Ticket, load_ticket, save_ticket, ticket_forward
from construct.verify import verify_ticket
from construct.weak import build_weak_ticket

__all__ = ["solve_subset_sums", "Target", "make_target", "random_target", "load_target", "digits_target",
           "target_forward", "Source", "sample_source", "Ticket", "ticket_forward", "save_ticket", "load_ticket",
           "build_weak_ticket", "build_strong_ticket", "plan_strong", "Certificate", "certify", "interval_bounds",
           "sampled_error", "verify_ticket"]
