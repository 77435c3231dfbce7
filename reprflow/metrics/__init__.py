"""Representation-flow metrics: pure math on the token states of one prompt.

Every metric takes ``H`` of shape (n_states, n_tokens, hidden) (numpy or torch),
computes in float64 and returns numpy float64 (an array or a float). Nothing here
touches files, Zarr or config; ``reprflow.pipeline`` does load -> compute -> write.

Modules: :mod:`~reprflow.metrics.cosine` (layerwise and inter-token cosine, Eq. 2),
:mod:`~reprflow.metrics.cka` (linear CKA, biased and debiased, minibatch CKA) and
:mod:`~reprflow.metrics.smoothness_stability` (Sm, Eq. 3, and St, Eq. 4); :mod:`~reprflow.metrics.mixed` computes
them all in one float32 pass (``metrics.precision: mixed``). A map from each metric to its function,
file and figure: docs/metrics.md.

Names are imported on first use (PEP 562): a job that needs one helper (the probes need
``reprflow.metrics._arrays``) neither imports nor, in its code digest
(reprflow/workflow/lineage.py), depends on every metric.

``METRICS`` (:mod:`~reprflow.metrics.registry`) maps a config name to a function ``f(H) -> ndarray | float``::

    METRICS["inter_token_cosine"](H)   # shape (n_states,)
    METRICS["nope"]                    # UnknownMetricError listing the known names
"""

from reprflow.lazy import lazy_exports

# name -> submodule (or a dotted module outside the package), imported on first use
_EXPORTS = {
    "CKAMatrices": "cka",
    "MinibatchCKAAccumulator": "cka",
    "center_gram": "cka",
    "cka_from_grams": "cka",
    "cka_matrices": "cka",
    "cka_matrix": "cka",
    "feature_space_linear_cka": "cka",
    "gram_linear": "cka",
    "hsic": "cka",
    "linear_cka": "cka",
    "minibatch_cka": "cka",
    "InterTokenCosineAccumulator": "cosine",
    "LayerwiseCosineAccumulator": "cosine",
    "binned_layerwise_cosine": "cosine",
    "inter_token_cosine": "cosine",
    "layerwise_cosine": "cosine",
    "SmoothnessStabilityAccumulator": "smoothness_stability",
    "mean_state_rms": "smoothness_stability",
    "smoothness": "smoothness_stability",
    "smoothness_scale_free": "smoothness_stability",
    "stability": "smoothness_stability",
    "stability_scale_free": "smoothness_stability",
    "METRICS": "registry",
    "get_metric": "registry",
    "UnknownMetricError": "reprflow.errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
