"""One EMA codebook of the residual vector quantizer: lookup, EMA update, k-means, dead codes.

Split out of :mod:`lit_codec.nn.quantization` (which explains the design); this file holds
the per-layer codebook and the numerical helpers it needs: blocked nearest-neighbour
search, k-means++ / Lloyd initialisation, seeded generators and the distributed gathers
that keep codebooks identical on every rank.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable

__all__ = ["EuclideanCodebook"]

# Streams of the seeded generators: which random choice a generator serves.
_DROPOUT, _KMEANS, _REPLACE, _INIT = 0, 1, 2, 3


class EuclideanCodebook(Configurable, nn.Module):
    """EMA codebook of ``codebook_size`` float32 codes (buffers, no gradient).

    EMA as in SoundStream/EnCodec: ``cluster_size <- decay * cluster_size + (1 - decay) *
    counts``, ``embed_sum <- decay * embed_sum + (1 - decay) * sums``, and each code is
    ``embed_sum / smoothed cluster size`` with Laplace smoothing
    ``(n_k + eps) / (n + K eps) * n``. A code whose cluster size falls below
    ``threshold_ema_dead_code`` is re-seeded with a vector of the current batch and its
    statistics reset to that vector: cluster size ``max(mean cluster size, 2 * threshold)``
    and embedding sum ``vector * cluster size``, so it survives the following steps even if
    unused (at least ``ln 2 / (1 - decay)`` steps, about 69 for decay 0.99; one step for any
    decay >= 0.5). EnCodec re-seeds before its EMA update and keeps the old statistics,
    which pull the code straight back (facebookresearch/encodec#61).

    Args:
        dim: channels of a code.
        codebook_size: number of codes ``K``.
        l2_normalize: keep codes L2-normalised (inputs must be normalised by the caller).
        decay: EMA decay.
        epsilon: Laplace smoothing.
        kmeans_init: start uninitialised (zeros) and k-means-initialise (k-means++ seeding,
            then Lloyd) on the first training batch; otherwise start uniformly random with
            cluster size 1 (so codes the first batches do not use get re-seeded from them).
        kmeans_iters: Lloyd iterations of that k-means.
        threshold_ema_dead_code: cluster size under which a code is re-seeded (0: never).
        seed: seeds random init, k-means and re-seeding (with the step number).
    """

    def __init__(
        self,
        dim: int = 128,
        codebook_size: int = 1024,
        l2_normalize: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.l2_normalize = l2_normalize
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.seed = seed
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            bound = math.sqrt(6.0 / dim)  # EnCodec's kaiming-uniform init
            embed = torch.rand(codebook_size, dim, generator=_generator(seed, _INIT))
            embed = embed * (2 * bound) - bound
            if l2_normalize:
                embed = F.normalize(embed, dim=1)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.full((codebook_size,), float(not kmeans_init)))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("embed", embed)
        self._initialized = not kmeans_init  # mirrors the buffer without a device sync
        self._tables: _SearchTables | None = None  # derived from ``embed``, see search_tables

    # -------------------------------------------------------------- lookup
    def nearest(self, z: Tensor) -> Tensor:
        """(N, dim) float32 vectors -> (N,) index of the nearest code.

        In eval mode few rows (streaming) take one product with the codes stored in the
        order in which the many-row search breaks ties: the same index for the same
        distances, at a fraction of the cost.
        """
        tables = self.search_tables()
        if z.shape[0] <= _FEW_ROWS and not self.training:
            _, codes_t, codes_sq, order = tables.few()
            pos = torch.addmm(codes_sq, z, codes_t, alpha=-2.0).argmin(1)  # (N,)
            return pos if order is None else order.index_select(0, pos)
        return _nearest(z, self.embed, tables.embed_sq)

    def search_tables(self) -> _SearchTables:
        """What the nearest-code search derives from the codebook (squared norms...), cached
        until the codebook changes: every write into ``embed`` (EMA update, re-seeding,
        k-means, ``load_state_dict``, ``copy_``) bumps its version counter and ``.to()``
        replaces it, either of which makes the next call recompute them."""
        embed = self.embed
        if embed.is_inference():  # inference tensors keep no version counter: no cache
            return _SearchTables(embed)
        key = (embed.data_ptr(), embed._version)
        tables = self._tables
        if tables is None or tables.embed is not embed or tables.key != key:
            tables = self._tables = _SearchTables(embed, key)
        return tables

    def lookup(self, idx: Tensor) -> Tensor:
        """(N,) indices -> (N, dim) codes."""
        return self.embed.index_select(0, idx)

    # -------------------------------------------------------------- training
    @torch.no_grad()
    def statistics(
        self, z: Tensor, idx: Tensor, step: int | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """This batch's code counts (K,), and for a training ``step`` the sums of assigned
        vectors (K, dim) and ``K`` candidate rows for re-seeding (K, dim)."""
        counts = torch.bincount(idx, minlength=self.codebook_size).float()  # (K,)
        if step is None:
            return counts, None, None
        sums = torch.zeros_like(self.embed).index_add_(0, idx, z)  # (K, dim)
        candidates = None
        if self.threshold_ema_dead_code > 0:
            generator = _generator(self.seed, _REPLACE, step)
            rows = _sample_indices(z.shape[0], self.codebook_size, generator)
            rows = rows.to(z.device, non_blocking=True)
            candidates = z.index_select(0, rows)  # (K, dim)
        return counts, sums, candidates

    @torch.no_grad()
    def update_(self, counts: Tensor, sums: Tensor) -> None:
        """EMA step with the (already all-reduced) counts (K,) and sums (K, dim)."""
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (
            (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        )
        embed = self.embed_sum / smoothed.unsqueeze(1)  # (K, dim)
        self.embed.copy_(F.normalize(embed, dim=1) if self.l2_normalize else embed)

    def dead_codes(self) -> Tensor:
        """(K,) bool: codes whose EMA cluster size is below the threshold."""
        return self.cluster_size < self.threshold_ema_dead_code

    @torch.no_grad()
    def replace_(self, dead: Tensor, vectors: Tensor) -> None:
        """Re-seed the ``dead`` codes (K,) bool with ``vectors`` (n_dead, dim), resetting
        their EMA statistics to match."""
        reset = self.cluster_size.mean().clamp(min=2 * self.threshold_ema_dead_code)
        self.embed[dead] = vectors
        self.cluster_size[dead] = reset
        self.embed_sum[dead] = vectors * reset

    @torch.no_grad()
    def initialize_if_needed(self, z: Tensor, step: int) -> None:
        """k-means-initialise on ``z`` (N, dim) if not done yet; gathers ``z`` from all ranks,
        runs k-means on rank 0 and broadcasts the result."""
        if self._initialized:
            return
        world = _world_size()
        data = _all_gather_rows(z) if world > 1 else z
        if world == 1 or dist.get_rank() == 0:
            means, counts = _kmeans(
                data,
                self.codebook_size,
                self.kmeans_iters,
                self.l2_normalize,
                _generator(self.seed, _KMEANS, step),
            )
            packed = torch.cat([means, counts.unsqueeze(1)], dim=1)  # (K, dim + 1)
        else:
            packed = z.new_empty(self.codebook_size, self.dim + 1)
        if world > 1:
            dist.broadcast(packed, src=0)
        means, counts = packed[:, :-1], packed[:, -1]
        self.embed.copy_(means)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(means * counts.unsqueeze(1))
        self.initialized.fill_(True)
        self._initialized = True

    # -------------------------------------------------------------- dtype & checkpoints
    def _apply(self, fn, recurse=True):  # type: ignore[override]
        """Keep the float32 buffers float32 when the module is cast (``.half()``, bf16-true)."""
        kept = {
            k: b for k, b in self._buffers.items() if b is not None and b.dtype == torch.float32
        }
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new is not None and new.dtype != torch.float32:
                self._buffers[name] = old.to(new.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)


# ---------------------------------------------------------------------- search

# Up to this many rows, :meth:`EuclideanCodebook.nearest` takes one product and a plain
# argmin (no blocks, no two-level reduction): the streaming case, one or two frames.
_FEW_ROWS = 16


class _SearchTables:
    """What the nearest-code search derives from a (K, d) codebook: the squared norms (K,)
    and, on demand, the tables of the few-row search (:meth:`few`)."""

    def __init__(self, embed: Tensor, key: tuple[int, int] | None = None) -> None:
        self.embed = embed
        self.key = key
        with torch.inference_mode(False), torch.no_grad():  # usable outside inference mode
            self.embed_sq = embed.square().sum(1)  # (K,)
        self._few: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None

    def few(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The codes (K, d), the same as (d, K) (the faster factor for few rows), their
        squared norms (K,) and ``order`` (K,), the code at each position, or None. Where
        :func:`_argmin_rows` reduces in two levels the codes are reordered so that a plain
        argmin breaks ties as it does (by offset within a block of 64, then by block)."""
        if self._few is None:
            embed, embed_sq = self.embed, self.embed_sq
            with torch.inference_mode(False), torch.no_grad():
                order = None
                if _two_level(embed.device, embed.shape[0]):
                    order = _tie_order(embed.shape[0], embed.device)
                    embed, embed_sq = embed.index_select(0, order), embed_sq.index_select(0, order)
                self._few = (embed, embed.t().contiguous(), embed_sq, order)
        return self._few


@functools.cache
def _tie_order(k: int, device: torch.device) -> Tensor:
    """(K,) the code at each position of the tie-breaking order of :func:`_argmin_rows`:
    position ``offset * blocks + block`` holds code ``block * 64 + offset``."""
    with torch.inference_mode(False):
        return torch.arange(k, device=device).view(k // 64, 64).t().reshape(-1)


def _two_level(device: torch.device, k: int) -> bool:
    """Whether :func:`_argmin_rows` reduces ``k`` columns in two levels."""
    return device.type == "cpu" and k % 64 == 0 and k >= 256


def _nearest(z: Tensor, embed: Tensor, embed_sq: Tensor | None = None) -> Tensor:
    """(N, d) vectors, (K, d) codes -> (N,) index of the nearest code (squared L2).

    ``argmin_k ||e_k||^2 - 2 z.e_k`` (``||z||^2`` does not change the argmin) from ``addmm``
    over blocks of rows whose (rows, K) distances stay in cache on CPU. ``embed_sq``: the
    codes' squared norms (K,), if already known.
    """
    n, k = z.shape[0], embed.shape[0]
    if embed_sq is None:
        embed_sq = embed.square().sum(1)  # (K,)
    rows = max(1, (2**19 if z.device.type == "cpu" else 2**26) // k)
    if n <= rows:
        return _argmin_rows(torch.addmm(embed_sq, z, embed.t(), alpha=-2.0))
    out = torch.empty(n, dtype=torch.long, device=z.device)
    buffer = z.new_empty(rows, k)
    for start in range(0, n, rows):
        block = z[start : start + rows]
        dist_block = torch.addmm(
            embed_sq, block, embed.t(), alpha=-2.0, out=buffer[: block.shape[0]]
        )
        out[start : start + block.shape[0]] = _argmin_rows(dist_block)
    return out


def _argmin_rows(d: Tensor) -> Tensor:
    """Row-wise argmin of (N, K) ``d``. On CPU ``amin`` is vectorised and ``argmin`` is not,
    so it finds the best offset within blocks of 64 columns first (about 3x faster); any
    index of a minimum may be returned on ties."""
    n, k = d.shape
    if not _two_level(d.device, k):
        return d.argmin(1)
    blocks = k // 64
    d3 = d.view(n, blocks, 64)  # (N, K/64, 64)
    offset = d3.amin(1).argmin(1)  # (N,) best column within a block
    column = d3.gather(2, offset.view(n, 1, 1).expand(n, blocks, 1)).view(n, blocks)  # (N, K/64)
    return column.argmin(1) * 64 + offset


def _kmeans(
    data: Tensor, n_codes: int, iters: int, l2_normalize: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on (N, d) ``data``: (n_codes, d) means and their (n_codes,) counts.
    Means start from k-means++ seeding; an empty cluster keeps its previous mean."""
    dim = data.shape[1]
    means = _kmeans_plus_plus(data, n_codes, generator)
    for _ in range(iters):
        assign = _nearest(data, means)  # (N,)
        counts = torch.bincount(assign, minlength=n_codes).to(data.dtype)  # (K,)
        sums = data.new_zeros(n_codes, dim).index_add_(0, assign, data)  # (K, d)
        new = sums / counts.clamp(min=1).unsqueeze(1)
        if l2_normalize:
            new = F.normalize(new, dim=1)
        means = torch.where(counts.unsqueeze(1) > 0, new, means)
    counts = torch.bincount(_nearest(data, means), minlength=n_codes).to(data.dtype)
    return means, counts


def _kmeans_plus_plus(data: Tensor, n_codes: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each new mean is a data point drawn
    with probability proportional to its squared distance to the nearest mean so far, so
    well-separated clusters all get a mean. (n_codes, d); data points repeat if N < n_codes."""
    n = data.shape[0]
    uniform = torch.rand(n_codes, generator=generator).to(data.device, non_blocking=True)
    data_sq = data.square().sum(1)  # (N,)
    chosen = torch.empty(n_codes, dtype=torch.long, device=data.device)
    chosen[0] = (uniform[0] * n).long().clamp(max=n - 1)
    nearest_sq = torch.full_like(data_sq, float("inf"))
    for k in range(1, n_codes):
        centre = data.index_select(0, chosen[k - 1 : k])[0]  # (d,); no host sync on GPU
        dist_sq = torch.addmv(data_sq + centre.square().sum(), data, centre, alpha=-2.0)  # (N,)
        nearest_sq = torch.minimum(nearest_sq, dist_sq.clamp_(min=0))
        cdf = nearest_sq.cumsum(0)  # (N,)
        # Inverse-CDF draw; if every point sits on a mean (cdf all 0) this picks the last one.
        chosen[k] = torch.searchsorted(cdf, uniform[k : k + 1] * cdf[-1], right=True).clamp(
            max=n - 1
        )[0]
    return data.index_select(0, chosen)


def _sample_indices(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` row indices in [0, n): distinct when ``n >= k`` (CPU tensor)."""
    if n >= k:
        return torch.randperm(n, generator=generator)[:k]
    return torch.randint(0, n, (k,), generator=generator)


_MASK64 = (1 << 64) - 1


def _all_gather_rows(z: Tensor) -> Tensor:
    """Concatenate the (N_r, d) ``z`` of every rank (N_r may differ) on every rank."""
    world = dist.get_world_size()
    size = torch.tensor([z.shape[0]], device=z.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = z.new_zeros(max(counts), z.shape[1])
    padded[: z.shape[0]] = z
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)])


def _mix(*values: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64 steps), the same in every process."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h ^= h >> 31
        h = h * 0x94D049BB133111EB & _MASK64
        h ^= h >> 29
    return h >> 1


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from ``keys``: the same random choices on every rank."""
    generator = torch.Generator()
    generator.manual_seed(_mix(*keys))
    return generator


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
