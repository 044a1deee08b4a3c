"""Data-parallel training over MPI (mpi4py + MPICH) or NCCL (CuPy): see DESIGN.md, scaling out.

- `launch`: `dlrun train --nproc N` starts N workers with mpiexec and reports how they ended.
- `hosts`: `--hosts`/`--hostfile` for mpiexec, and the check that every host sees the files.
- `watchdog`: ends a rank stuck in a collective; beacons tell the launcher which hosts answer.
- `world`: a worker finds the MPI job it was started in (rank, size, local rank).
- `communicator`: the summing all-reduce the engine's `all_reduce` primitive calls.
- `data_parallel`: the training step's gradient all-reduce (buckets started during backward).
"""
