"""Labelled faces on disk, read without torch: what training, calibration, selection and
``eval`` all read, so a device can score a package on its own faces.

  faces    ``FaceSet`` (images, soft and hard labels, label names, files) and the image reader
  readers  ``read_dataset``: class folders, unlabelled folders, FER+ splits, the FER2013 CSV;
           person-level splits and concatenation
  fer      the FER+ vote folders and the FER2013 CSV / label files
  domains  the face domains of shared/ (``DOMAINS``), their parts, aligned variants, and the
           scoreboard's test sets (``SCOREBOARD``)
"""
