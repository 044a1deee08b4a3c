"""Data-parallel training over MPI (mpi4py + MPICH) or NCCL (CuPy): see DESIGN.md, scaling out.

- `launch`: `dlrun train --nproc N` starts N workers with mpiexec and reports how they ended.
- `world`: a worker finds the MPI job it was started in (rank, size, local rank).
- `communicator`: the summing all-reduce the engine's `all_reduce` primitive calls.
- `data_parallel`: the training step's flat gradient all-reduce, state broadcast, metric sums.
"""
