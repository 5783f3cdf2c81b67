"""PEPNet: parameter and embedding personalized network (Chang et al., "PEPNet: Parameter and
Embedding Personalized Network for Infusing with Personalized Prior Information", KDD 2023).

* **EPNet** (embedding personalisation): a gate neural unit on the domain-side embedding
  and the *stop-gradient* field embeddings scales every field embedding:
  ``O_ep = GateNU_ep([e_d, sg(E)]) * E``;
* **PPNet** (parameter personalisation): every hidden layer ``H_l`` of the tower is scaled
  by a gate on the personalised prior (the embeddings of ``persona_fields``, e.g. user and
  item ids) and the stop-gradient EPNet output:
  ``H_l' = GateNU_l([E_persona, sg(O_ep)]) * H_l``.

Gates are ``2 * sigmoid(...)`` (:class:`~adrank.nn.domain.GateNU`). This is the single-task
form (one tower; the paper's multi-task towers share the same gates). The domain comes from
the schema's ``domain`` role, with domain dropout training the OOV fallback slot (see
:mod:`adrank.nn.domain`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.domain import DomainInput, GateNU
from adrank.nn.dropout import Dropout
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import check_widths


def persona_field_names(feature_map: FeatureMap, names: Sequence[str] | None) -> list[str]:
    """``names`` checked against the feature map; by default every categorical field but
    the domain's."""
    if names:
        for n in names:
            feature_map.field(n)  # KeyError naming the field and the known ones
        return list(names)
    domain = feature_map.roles["domain"].source
    chosen = [f.name for f in feature_map.of_kind("categorical") if f.name != domain]
    return chosen or [f.name for f in feature_map.of_kind("categorical")]


@register("pepnet")
class PEPNet(CTRModel):
    """E (B, F, D); O_ep = gate_ep([e_d, sg(E)]) * E; tower layers scaled by PPNet gates.

    Shapes: features -> (B,).
    """

    required_roles = ("domain",)  # EPNet's domain-side input
    multi_domain = True

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (256, 128, 64),
        gate_hidden_dim: int = 64,
        persona_fields: Sequence[str] | None = None,
        net_dropout: float = 0.1,
        domain_dropout: float = 0.1,
    ) -> None:
        super().__init__(feature_map)
        check_widths(hidden_units)
        self.domain = DomainInput(feature_map, domain_dropout)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.persona = persona_field_names(feature_map, persona_fields)
        # a buffer, so the gather needs no host-to-device copy per step (CUDA graphs)
        index = torch.tensor([feature_map.names.index(n) for n in self.persona])
        self.register_buffer("persona_index", index, persistent=False)
        fields = feature_map.num_fields
        width = fields * embedding_dim
        self.domain_embedding = nn.Embedding(self.domain.num_slots, embedding_dim)
        self.epnet = GateNU(embedding_dim + width, fields, gate_hidden_dim)
        prior = len(self.persona) * embedding_dim + width
        widths = [width, *hidden_units]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.ppnet = nn.ModuleList(GateNU(prior, b, gate_hidden_dim) for b in hidden_units)
        self.dropout = Dropout(net_dropout)
        self.output = nn.Linear(widths[-1], 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        features, slot = self.domain(features)  # slot: (B,)
        emb = self.embedding(features)  # (B, F, D)
        domain_side = torch.cat([self.domain_embedding(slot), emb.detach().flatten(1)], dim=1)
        field_gate = self.epnet(domain_side)  # (B, F): one scale per field embedding
        personalised = (emb * field_gate.unsqueeze(-1)).flatten(1)  # O_ep (B, F*D)
        persona = emb.index_select(1, self.persona_index).flatten(1)  # (B, P*D)
        prior = torch.cat([persona, personalised.detach()], dim=1)
        h = personalised
        for layer, gate in zip(self.layers, self.ppnet, strict=True):
            h = self.dropout(torch.relu(layer(h)) * gate(prior))
        return self.output(h).squeeze(-1)
