"""Model packages: a folder (or zip) of model files with a manifest that binds them.

Where each part lives:
  manifest  reading a package: the manifest, its model files, ``load_package``, ``resolve_model``
  files     hashed reads and copies, and paths that must stay inside the package
  labels    each model file's declared label order, checked against the manifest's
  archive   zipped packages, extracted once into the user cache
  write     writing a package atomically (the exporter's and ``pack``'s one writer)
  describe  the human summary ``motivnet-edge info`` prints
"""

from .files import copy_verified, read_verified, sha256_file, verify
from .manifest import (DEFAULT_MODEL, DEFAULT_NAME, MAX_MANIFEST_BYTES, MODELS_DIR, SCHEMA_VERSION, ModelFile,
                       ModelPackage, embedded_models, licence_terms, load_package, resolve_model)

__all__ = ["DEFAULT_MODEL", "DEFAULT_NAME", "MAX_MANIFEST_BYTES", "MODELS_DIR", "SCHEMA_VERSION", "ModelFile",
           "ModelPackage", "copy_verified", "embedded_models", "licence_terms", "load_package", "read_verified",
           "resolve_model", "sha256_file", "verify"]
