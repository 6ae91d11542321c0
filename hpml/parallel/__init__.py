"""How ranks start and find each other, and where each runs.

    mpi           MPI start-up through mpi4py (preprocessing), the environment for `mpirun`
    distributed   the only module that imports Horovod: init, LR scaling, collectives,
                  callbacks, the optimizer wrapper, Gloo rendezvous
    placement     this rank's CPUs, thread settings and node-local scratch

May import hpml.core.
"""
