"""motivnet-edge runtime: facial emotion recognition from a model package, without torch.

    from motivnet_edge import EmotionRecognizer
    with EmotionRecognizer.from_pretrained() as rec:
        for face in rec.predict("photo.jpg"):
            print(face.box, face.label, face.confidence)
"""

import os as _os

# OpenCV logs decoder complaints to stderr itself; our errors already say what is wrong and
# what to do, so its own logger is silent unless the user asks (OPENCV_LOG_LEVEL).
_os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
# OpenCV reads its decoder cap once, when cv2 is first imported: set it before any import
# of ours pulls cv2 in. image_io's header check is the primary guard; this is the backstop.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(100_000_000))

from .backends import BackendOptions  # noqa: E402
from .detectors import Detection, create_detector  # noqa: E402
from .errors import (BackendUnavailableError, InvalidImageError, LabelError, MotivnetError,  # noqa: E402
                     OptionError, PackageError)
from .labels import FER2013_LABELS, MOTIVNET_LABELS  # noqa: E402
from .package import ModelPackage, load_package  # noqa: E402
from .preprocess import Preprocessing, face_crop, to_tensor  # noqa: E402
from .recognizer import EmotionRecognizer, RecognizerOptions  # noqa: E402
from .results import FacePrediction, FrameResult  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "EmotionRecognizer", "RecognizerOptions", "BackendOptions", "FacePrediction", "FrameResult", "Detection", "create_detector",
    "ModelPackage", "load_package", "Preprocessing", "face_crop", "to_tensor",
    "MotivnetError", "InvalidImageError", "OptionError", "PackageError", "BackendUnavailableError", "LabelError",
    "MOTIVNET_LABELS", "FER2013_LABELS", "__version__",
]
