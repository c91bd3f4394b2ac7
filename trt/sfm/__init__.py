"""SfM outputs of pairs jobs: hloc's h5 files, COLMAP databases and reconstructions, and ``make sfm``.

Needs the ``sfm`` extra (h5py, pycolmap); the serving install does not.
"""
