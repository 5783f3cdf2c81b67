"""AutoInt+ (Song et al., CIKM 2019): AutoInt's self-attention tower plus a DNN tower over
the flat embeddings, logits summed. Same class as :class:`AutoInt`; only the defaults
(BARS Frappe_x1 best) differ."""

from __future__ import annotations

from collections.abc import Sequence

from adrank.data.feature_map import FeatureMap
from adrank.models.autoint import AutoInt
from adrank.models.registry import register


@register("autoint_plus")
class AutoIntPlus(AutoInt):
    """AutoInt with a DNN: logit = w^T flatten(SelfAttn^L(E)) + MLP(flatten(E)).

    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        attention_layers: int = 5,
        num_heads: int = 4,
        attention_dim: int = 128,
        use_residual: bool = True,
        use_scale: bool = True,
        layer_norm: bool = True,
        dnn_hidden_units: Sequence[int] = (400, 400, 400),
        dnn_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
        use_wide: bool = False,
    ) -> None:
        if not dnn_hidden_units:
            raise ValueError("autoint_plus needs dnn_hidden_units; use model 'autoint' without")
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            attention_layers=attention_layers,
            num_heads=num_heads,
            attention_dim=attention_dim,
            use_residual=use_residual,
            use_scale=use_scale,
            layer_norm=layer_norm,
            dnn_hidden_units=dnn_hidden_units,
            dnn_activations=dnn_activations,
            net_dropout=net_dropout,
            batch_norm=batch_norm,
            use_wide=use_wide,
        )
