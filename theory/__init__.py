"""theory: the bounds of "Why Random Pruning Is All We Need to Start Sparse" (Gadhikar, Mukherjee, Burkholz,
ICML 2023) as pure functions, following the precise statements of docs/math.md.

Only numpy, scipy and sympy are used; importing this package never imports torch.

Modules (one idea each): ``er_factor`` (κ(p), §1–2), ``lower_bound`` (3-layer lower bound and error floor, §3),
``weak_widths`` (§4), ``subset_sum`` (N_SS table and thinning bounds, §5), ``strong_widths`` (§6 widths and
tolerance splits), ``densities`` (layer-wise schemes, §7), ``symbolic`` (sympy derivations), ``check`` (the
property-test battery behind ``python -m theory check``).
"""
from theory.densities import LayerDensities, layer_densities
from theory.er_factor import er_factor
from theory.lower_bound import (connected_inputs, connection_probability, disconnection_probability, error_floor,
                                lower_bound_width, lower_bound_width_closed_form, uniform_variance)
from theory.strong_widths import StrongWidths, backward_layer_tolerance, forward_tolerance_split, strong_widths
from theory.subset_sum import (SOLVER_MAX_CANDIDATES, SearchPlan, block_width, candidate_resolution,
                               effective_tolerance, mixture_success_probability, nss, nss_lookup, paper_literal_width,
                               search_plan, thinning_width)
from theory.weak_widths import WeakWidths, weak_widths
from theory.conv_widths import ConvStrongWidths, GraphNode, conv_strong_widths, nodes_from_description
from theory.conv_weak_widths import ConvWeakWidths, conv_weak_widths
from theory.conv_weak_widths import ConvWeakGraphWidths, conv_weak_graph_widths
from theory.conv_lplus1_widths import ConvLPlus1Widths, conv_lplus1_widths

__version__ = "0.1.0"

__all__ = [
    "er_factor",
    "connection_probability", "disconnection_probability", "lower_bound_width", "lower_bound_width_closed_form",
    "connected_inputs", "uniform_variance", "error_floor",
    "weak_widths", "WeakWidths",
    "nss", "nss_lookup", "thinning_width", "block_width", "mixture_success_probability", "paper_literal_width",
    "SOLVER_MAX_CANDIDATES", "search_plan", "SearchPlan", "candidate_resolution", "effective_tolerance",
    "strong_widths", "StrongWidths", "backward_layer_tolerance", "forward_tolerance_split",
    "layer_densities", "LayerDensities",
    "conv_strong_widths", "ConvStrongWidths", "GraphNode", "nodes_from_description", "conv_weak_widths", "ConvWeakWidths",
    "conv_weak_graph_widths", "ConvWeakGraphWidths",
    "conv_lplus1_widths", "ConvLPlus1Widths",
]
