"""Study B, stage 3 (probing/embedding_similarity.py): why hard examples are hard in embedding space:
class-centroid similarities, each hard example's similarity to its own and its predicted class, t-SNE."""
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from ...core import atomic
from ...core.cli import flag, params_from, positive_int, run_main
from ...core.findings import Picture, Section
from ...core.record import write_record
from ...plots import centroid_similarity_figure, save, tsne_figure
from ...probe import SMOKE as PROBE_SMOKE
from ...probe import Probe, ProbeParams, l2_normalize, load_probe, nearest_neighbours, probing_parser, ranked

TSNE_MAX_POINTS = 2000


@dataclass(frozen=True)
class EmbeddingParams(ProbeParams):
    hard_count: int = field(default=50, metadata=flag("hardest examples to analyse", positive_int))


SMOKE = EmbeddingParams(**dataclasses.asdict(PROBE_SMOKE), hard_count=10)


def class_centroids(features: torch.Tensor, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """L2-normalized mean of each class's L2-normalized features (zero rows for absent classes)."""
    centroids = torch.zeros(num_classes, features.shape[1])
    for c in range(num_classes):
        members = torch.as_tensor(labels == c)
        if members.any():
            centroids[c] = features[members].mean(0)
    return torch.nn.functional.normalize(centroids, dim=1)


def tsne_points(test: torch.Tensor, hard_indices: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept (a random TSNE_MAX_POINTS plus every hard example) and their 2-D t-SNE after PCA to 50-d."""
    rng = np.random.default_rng(seed)
    keep = np.union1d(rng.permutation(len(test))[:TSNE_MAX_POINTS], hard_indices)
    points = PCA(n_components=min(50, len(keep), test.shape[1]), random_state=seed).fit_transform(test[keep].numpy())
    embedded = TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca",
                    random_state=seed).fit_transform(points)
    return keep, embedded


def embedding_report(probe: Probe, hard_count: int) -> None:
    names = probe.class_names
    _, table = ranked(probe)
    train, test = l2_normalize(probe.train_features), l2_normalize(probe.test_features)
    centroids = class_centroids(train, probe.train_labels, len(names))
    similarity = (centroids @ centroids.T).numpy()
    atomic.write_csv(probe.out_dir / "centroid_similarity.csv",
                     [{"class": names[i], **dict(zip(names, similarity[i].round(6).tolist()))}
                      for i in range(len(names))], ["class", *names])
    save(probe.out_dir / "centroid_similarity.png", centroid_similarity_figure(
        similarity, names, f"{probe.model_name}: cosine similarity of class centroids"))

    hard = table.head(hard_count)
    indices = hard.test_index.to_numpy(copy=True)
    own = probe.test_labels[indices]
    predicted = np.array([names.index(p) for p in hard.linear_pred])
    to_centroids = (test[indices] @ centroids.T).numpy()
    sims, neighbours = nearest_neighbours(train, test[indices], 5)
    rows = []
    for i, row in enumerate(hard.itertuples()):
        neighbour_list = neighbours[i].tolist()
        rows.append({"rank": row.rank, "test_index": row.test_index, "true_label": row.true_label,
                     "predicted_label": row.linear_pred,
                     "sim_own_centroid": round(float(to_centroids[i, own[i]]), 6),
                     "sim_predicted_centroid": round(float(to_centroids[i, predicted[i]]), 6),
                     "closer_to_predicted": bool(to_centroids[i, predicted[i]] > to_centroids[i, own[i]]),
                     "neighbour_indices": " ".join(map(str, neighbour_list)),
                     "neighbour_labels": " ".join(names[probe.train_labels[n]] for n in neighbour_list),
                     "neighbour_sims": " ".join(f"{s:.4f}" for s in sims[i].tolist())})
    atomic.write_csv(probe.out_dir / "hard_example_similarity.csv", rows, list(rows[0]))
    keep, embedded = tsne_points(test, indices, probe.seed)
    save(probe.out_dir / "tsne.png", tsne_figure(
        embedded, probe.test_labels[keep], np.isin(keep, indices), names,
        f"{probe.model_name}: t-SNE of test embeddings ({len(keep)} images)"))
    closer = sum(r["closer_to_predicted"] for r in rows)
    print(f"{probe.model_name}: {closer} of {len(rows)} hardest test images lie closer to the predicted class "
          f"centroid than to their own -> {probe.out_dir}")
    section = Section(f"Study B: {probe.model_name}, embeddings of the hardest images",
                      lead=Picture(probe.out_dir / "tsne.png", "t-SNE of the test embeddings"),
                      notes=[f"{closer} of the {len(rows)} hardest test images lie closer to the predicted class's "
                             "centroid than to their own."],
                      pictures=[Picture(probe.out_dir / "centroid_similarity.png", "class-centroid similarity")],
                      links=[probe.out_dir / "hard_example_similarity.csv"])
    write_record(f"embedding_similarity.{probe.model_name}", {"probe": probe.out_dir}, sections=[section],
                 model=probe.model_name, weights=probe.settings["weights"], precision=probe.settings["precision"],
                 hard_examples=len(rows))


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = EmbeddingParams()
    args = probing_parser(description, defaults, SMOKE).parse_args(argv)
    params = params_from(args, defaults, SMOKE)
    run_main(lambda: embedding_report(load_probe(params), params.hard_count), args.debug)
