"""``LinearProbe``: one layer's linear softmax probe as a scikit-learn classifier.

It wraps :func:`reprflow.probes.fit_layer_probes` (the batched kernel the workflow uses)
with one state and one seed. Kept apart from :mod:`reprflow.probes` so that the workflow's
probe jobs do not import scikit-learn; ``from reprflow.probes import LinearProbe`` works too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d, validate_data

from reprflow.errors import ReprflowError
from reprflow.probes import (
    MATMUL_PRECISIONS,
    _check_bool,
    _check_choice,
    _check_int,
    _check_real,
    _fit_softmax_probes,
    _load_slab,
    _products_context,
    _products_precision,
    _resolve_device,
)

__all__ = ["LinearProbe", "ProbeNotFittedError"]


class ProbeNotFittedError(ReprflowError, NotFittedError):
    """``predict``/``score`` before ``fit``; also scikit-learn's ``NotFittedError``."""


class LinearProbe(ClassifierMixin, BaseEstimator):
    """A linear softmax probe for one layer: a scikit-learn classifier.

    Wraps the batched kernel of :func:`fit_layer_probes` with one state and one seed;
    trains on every sample passed to ``fit`` (no internal split). It follows the
    scikit-learn estimator conventions: ``__init__`` only stores its parameters (checked in
    ``fit``), fitted attributes end in ``_``, so ``get_params``/``set_params``,
    :func:`sklearn.base.clone`, :class:`~sklearn.pipeline.Pipeline`, ``GridSearchCV`` and
    :func:`~sklearn.model_selection.cross_val_score` work with it.

    Parameters
    ----------
    lr : float > 0
        Adam learning rate.
    epochs : int >= 1
        Full-batch Adam steps.
    seed : int >= 0
        Seeds the initial weights (default 0; training is deterministic on CPU for a seed).
    standardize : bool
        Z-score features with the training mean/std (ddof=0) before the linear map.
    device : str or torch.device, optional
        Compute device for ``fit``: ``"auto"``/None (default) is CUDA when available, else CPU.
    matmul_precision : {"auto", "float32", "tf32"}
        Precision of the float32 training products, as in :func:`fit_layer_probes`
        (default ``"auto"``: TF32 tensor cores on CUDA, IEEE float32 on CPU).

    Attributes
    ----------
    coef_ : ndarray of shape (hidden, n_classes), float64
        Weights on the raw features (standardisation folded in).
    intercept_ : ndarray of shape (n_classes,), float64
    classes_ : ndarray of shape (n_classes,)
        The sorted labels seen in ``fit``; ``predict`` returns values from it.
    n_features_in_ : int

    Examples
    --------
    >>> probe = LinearProbe(seed=0, epochs=50).fit(x_train, y_train)  # doctest: +SKIP
    >>> probe.score(x_val, y_val)  # doctest: +SKIP
    >>> cross_val_score(LinearProbe(epochs=50), states[12], labels, cv=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        lr: float = 0.05,
        epochs: int = 150,
        seed: int = 0,
        standardize: bool = True,
        device: str | torch.device | None = None,
        matmul_precision: str = "auto",
    ) -> None:
        self.lr = lr
        self.epochs = epochs
        self.seed = seed
        self.standardize = standardize
        self.device = device
        self.matmul_precision = matmul_precision

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        """Train on ``X`` of shape (n_samples, hidden) and labels ``y`` of shape (n_samples,).

        ``X`` is an array-like (validated the scikit-learn way: finite, dense, 2-D) or a
        :class:`torch.Tensor`, used where it is (e.g. already on the GPU). ``y`` holds any
        sortable labels (the gold position in the paper), at least two distinct ones.
        """
        owner = "LinearProbe"
        _check_real(owner, "lr", self.lr, low=0.0, high=math.inf, closed="neither")
        _check_int(owner, "epochs", self.epochs, low=1)
        _check_int(owner, "seed", self.seed, low=0)
        _check_bool(owner, "standardize", self.standardize)
        _check_choice(owner, "matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        dev = _resolve_device(owner, self.device)
        if isinstance(X, torch.Tensor):
            if X.ndim != 2:
                raise ValueError(
                    f"X passed to {owner}.fit must have shape (n_samples, hidden). Got shape {tuple(X.shape)}."
                )
            y = column_or_1d(np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y), warn=True)
            check_consistent_length(X, y)
            self.n_features_in_ = int(X.shape[1])
        else:
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])  # sets n_features_in_
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"{owner} needs at least 2 classes in y; got {classes.size} class ({classes.tolist()}).")
        x = _load_slab(X[None], dev, owner=owner, first_layer=0)  # [1, n_samples, hidden]
        shift = x.mean(dim=1, keepdim=True) if self.standardize else None
        if shift is not None:
            x = x - shift  # not in place: on CPU, x may share memory with the caller's X
        mask = torch.ones(X.shape[0], 1, dtype=torch.bool, device=dev)
        with _products_context(_products_precision(self.matmul_precision, dev), dev):
            w, b = _fit_softmax_probes(
                x,
                torch.from_numpy(codes.astype(np.int64)).to(dev),
                mask,
                seeds=(int(self.seed),),
                n_classes=classes.size,
                epochs=self.epochs,
                lr=self.lr,
                standardize=self.standardize,
                bar=None,
            )
        coef = w[0, :, 0].to(torch.float64)  # [hidden, C]
        intercept = b[0, 0].to(torch.float64)
        if shift is not None:
            intercept = intercept - shift[0, 0].to(torch.float64) @ coef
        self.coef_ = coef.cpu().numpy()
        self.intercept_ = intercept.cpu().numpy()
        self.classes_ = classes
        return self

    def _logits(self, X: Any) -> np.ndarray:
        """Logits of shape (n_samples, n_classes), float64."""
        if not hasattr(self, "coef_"):
            raise ProbeNotFittedError("This LinearProbe instance is not fitted yet: call fit(X, y) first.")
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = validate_data(self, X, reset=False, dtype=np.float64)  # checks n_features_in_
        return X @ self.coef_ + self.intercept_

    def decision_function(self, X: Any) -> np.ndarray:
        """Confidence scores, float64: the logits, shape (n_samples, n_classes); with two
        classes, as scikit-learn expects, shape (n_samples,): logit of ``classes_[1]`` minus
        logit of ``classes_[0]`` (> 0 predicts ``classes_[1]``)."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes), columns as ``classes_``."""
        logits = self._logits(X)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels of shape (n_samples,): the class of the largest logit."""
        logits = self._logits(X)  # first: raises ProbeNotFittedError before classes_ is looked up
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on (X, y), optionally weighted by ``sample_weight`` of shape (n_samples,)."""
        y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))
