"""Per-epoch validation: loss, MAP, NAR and the published monitor on the val split, sharded over ranks.

Each rank embeds its share of validation items (anchor + positives, the first ``data.block_len``
seconds (150 s) of each track, no augmentation, the same items every epoch), the anchors' segment
embeddings are gathered from all ranks, and each rank ranks all gathered anchors for its own
anchors as queries. Sums are then all-reduced, so every rank gets the same numbers for the scheduler.

Under ``protocol: clews`` (the default) this is the published ``train.py`` validation: shingles of
the model's length every model hop / 2 (10 s), distances reduced with the model's positive
reduction (``model.loss.redux.pos``, bpwr-5), per-query AP and rank percentile (the published NAR,
"ARP"), and the Discogs-VI monitor ``m_COMP`` = mean over queries of sqrt(ARP · (1 − AP)).
Under ``protocol: clews-pipe``: the training shingling, ``eval.redux``, and the monitor
sqrt(NAR/100 · (1 − MAP)) of the pooled means.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf


def validation_protocol(conf: DictConfig):
    from clews_pipe.retrieval.protocol_options import Protocol

    return Protocol.parse(str(conf.get("protocol", "clews")))


def validation_data_conf(conf: DictConfig) -> DictConfig:
    """The ``data`` section the validation loader uses: the protocol's validation shingle hop."""
    hop = validation_protocol(conf).validation_hop(float(conf.model.shingling.hop), float(conf.data.shingle_hop))
    return OmegaConf.merge(conf.data, {"shingle_hop": hop})


def validation_redux(conf: DictConfig) -> str:
    return validation_protocol(conf).validation_redux(str(conf.model.loss.redux.pos), str(conf.eval.redux))


def query_sums(per_query) -> list[float]:
    """``[sum AP, sum NAR (strict), sum ARP (published), sum sqrt(ARP (1 - AP)), queries]`` over the
    evaluated queries of a :class:`~clews_pipe.retrieval.metrics.QueryMetrics`."""
    ok = per_query.evaluated
    ap, nar, arp = per_query.ap[ok], per_query.nar[ok], per_query.arp[ok]
    comp = np.sqrt(np.clip(arp, 0.0, None) * np.clip(1.0 - ap, 0.0, None))
    return [float(ap.sum()), float(nar.sum()), float(arp.sum()), float(comp.sum()), float(ok.sum())]


@torch.no_grad()
def validate(fabric, model, loader, conf: DictConfig, desc: str = "validate") -> dict:
    from clews_pipe.retrieval.tiles import tile_distances
    from clews_pipe.retrieval.metrics import query_metrics
    from clews_pipe.training.loss import loss_from_config

    n_per_class = int(conf.data.n_per_class)
    model.eval()
    loss_sum, n_batches = 0.0, 0
    anchors_z, anchors_clique, anchors_track = [], [], []
    from clews_pipe.progress import progress_bar

    batches = progress_bar(loader, total=len(loader), desc=desc, unit="batch", leave=False,
                           disable=fabric.global_rank != 0)
    for x, clique, track in batches:
        x = x.to(fabric.device).float()
        clique, track = clique.to(fabric.device), track.to(fabric.device)
        with fabric.autocast():
            z = model.embed(x)
        z = z.float()
        loss, _, _ = loss_from_config(z, clique, track, conf.model.loss)
        loss_sum += float(loss)
        n_batches += 1
        anchors_z.append(z[::n_per_class].float())
        anchors_clique.append(clique[::n_per_class])
        anchors_track.append(track[::n_per_class])
    model.train()

    local_z = torch.cat(anchors_z)
    local_clique = torch.cat(anchors_clique)
    local_track = torch.cat(anchors_track)
    # Every rank holds the same number of batches (the sampler pads), so all_gather stacks evenly.
    all_z = fabric.all_gather(local_z).reshape(-1, *local_z.shape[1:])
    all_clique = fabric.all_gather(local_clique).reshape(-1)
    all_track = fabric.all_gather(local_track).reshape(-1)
    # The sampler pads with repeated anchors: keep each track once among the candidates ...
    track_np = all_track.cpu().numpy()
    _, first = np.unique(track_np, return_index=True)
    keep = np.sort(first)
    cand_z, cand_clique, cand_track = all_z[keep].cpu(), all_clique.cpu().numpy()[keep], track_np[keep]
    # ... and among this rank's queries (a local row is a query where it is that first occurrence).
    local_np = local_track.cpu().numpy()
    is_first = np.zeros(len(track_np), dtype=bool)
    is_first[first] = True
    offset = fabric.global_rank * len(local_np)
    q_rows = np.nonzero(is_first[offset : offset + len(local_np)])[0]
    q_z = local_z[torch.as_tensor(q_rows)].cpu()
    no_pad_q = torch.zeros(q_z.shape[:2], dtype=torch.bool)
    no_pad_c = torch.zeros(cand_z.shape[:2], dtype=torch.bool)
    dist = tile_distances(q_z, no_pad_q, cand_z, no_pad_c, validation_redux(conf), memory_mb=256.0)
    by_track = np.argsort(cand_track)
    own_col = by_track[np.searchsorted(cand_track[by_track], local_np[q_rows])]
    per_query = query_metrics(dist, local_clique.cpu().numpy()[q_rows], cand_clique, own_col)
    sums = torch.tensor([loss_sum, n_batches, *query_sums(per_query)], dtype=torch.float64, device=fabric.device)
    sums = fabric.all_reduce(sums, reduce_op="sum")
    n_eval = float(sums[6])

    def mean(i: int) -> float:
        return float(sums[i] / n_eval) if n_eval else math.nan

    published = validation_protocol(conf).published_validation
    return {
        "loss": float(sums[0] / max(float(sums[1]), 1.0)),
        "MAP": mean(2),
        "NAR": mean(4) if published else mean(3),  # the protocol's NAR (published: ARP)
        "NAR_strict": mean(3),
        "ARP": mean(4),
        "m_COMP": mean(5),
        "queries": int(n_eval),
    }
