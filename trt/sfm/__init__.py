"""``make sfm``: COLMAP reconstructions from the outputs of a pairs job (``trt.jobs``: hloc's h5 files and
a COLMAP database), beside COLMAP's own SIFT.

Needs the ``sfm`` extra (h5py, pycolmap); the serving install does not.
"""
