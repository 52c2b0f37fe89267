// Reductions of a LaTIM tile's scores on the device (the query plans --pool, --topk and
// --window), so that only they travel to the host. Each takes one score matrix s [ni, nj] of
// the tile at rows [i0, i0 + ni) and sources [j0, j0 + nj); pairs with j > i take no part.
// They match latim::reduce_tile(), the host reduction.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// The sum (fp64 accumulation) and the maximum of each pool x pool block: sum and mx
// [ceil(ni / pool), ceil(nj / pool)], NaN for a block without pairs.
void tile_pool(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t pool, float* sum, float* mx,
               cudaStream_t stream, int layer);
// Each row's K best sources in the tile (the larger score, then the larger index): value and
// tile column in val and col [ni, K], in no particular order; col -1 (value NaN) where a row
// has fewer than K sources in the tile.
void tile_topk(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t K, float* val, int32_t* col,
               cudaStream_t stream, int layer);
// out [ni, W]: column w = source i - w where it lies in the tile, NaN elsewhere.
void tile_window(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t W, float* out,
                 cudaStream_t stream, int layer);

}  // namespace latim::cuda
