"""Batch jobs on files: one pair, or a pairs file, matched into files (JSON, npz, hloc's h5, a COLMAP
database), in this process or on Ray actors. What ``trt_infer.py`` and ``make sfm`` run.

``pairs`` reads and makes pairs files, ``stages`` extracts and matches (``ray_stages`` on Ray),
``writers`` and ``hloc`` write the results, ``colmap`` the database, and ``job`` plans and runs a job.
It sits above the runtime (``Matcher``) and below ``trt.sfm``, which uses it and is never imported by it.
"""
